"""Changing a client's record and contact list: what the API and the command line both do.

Each function changes rows in the caller's session and returns what changed by *name* (fields, contact
ids), for the audit row: a value — above all the key-safe code — never goes into the log.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Mapping, Sequence
from typing import Any, Final

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from storage.models import Client, Contact

from .errors import NotFound, Unprocessable
from .schemas import ContactIn

__all__ = [
    "CLIENT_FIELDS",
    "add_contact",
    "apply_fields",
    "client_fields",
    "contact_view",
    "contacts_of",
    "remove_contact",
    "replace_contacts",
]

# The record's free fields, as read (the key-safe code is not one: it is only ever revealed on its own).
CLIENT_FIELDS: Final = (
    "phone",
    "birth_date",
    "language",
    "gp",
    "pharmacy",
    "conditions",
    "allergies",
    "mobility",
    "pets",
    "access_notes",
    "care_notes",
)
_WRITABLE: Final = frozenset({*CLIENT_FIELDS, "key_safe_code"})
_CONTACT_FIELDS: Final = (
    "name",
    "relation",
    "phone",
    "email",
    "keyholder",
    "reachable",
    "notify_missed_dose",
)
_PHONE_CHARS = re.compile(r"[^0-9+]")


def client_fields(client: Client) -> dict[str, Any]:
    """The record's fields as read: every field, and only whether a key-safe code is set."""
    return {
        **{name: getattr(client, name) for name in CLIENT_FIELDS},
        "key_safe_set": bool(client.key_safe_code),
    }


def apply_fields(client: Client, changes: Mapping[str, str]) -> list[str]:
    """Set the given fields (trimmed); return the names of those whose value changed, sorted."""
    changed = []
    for name, value in changes.items():
        if name not in _WRITABLE:
            raise Unprocessable(f"no field {name}")
        value = value.strip()
        if getattr(client, name) != value:
            setattr(client, name, value)
            changed.append(name)
    return sorted(changed)


def contact_view(c: Contact) -> dict[str, Any]:
    """A contact as the record shows it, with ``tel:`` and ``mailto:`` links."""
    tel = _PHONE_CHARS.sub("", c.phone) if c.phone else ""
    return {
        "id": c.id,
        "name": c.name,
        "relation": c.relation,
        "phone": c.phone,
        "email": c.email,
        "tel": f"tel:{tel}" if tel else None,
        "mailto": f"mailto:{urllib.parse.quote(c.email, safe='@.+-_')}" if c.email else None,
        "notify_missed_dose": c.notify_missed_dose,
        "keyholder": c.keyholder,
        "reachable": c.reachable,
    }


def contacts_of(session: Session, client_id: int) -> list[Contact]:
    """The client's contacts in their order: who is called first comes first."""
    query = select(Contact).where(Contact.client_id == client_id).order_by(Contact.position, Contact.id)
    return list(session.scalars(query))


def _set(contact: Contact, data: ContactIn) -> list[str]:
    changed = []
    for name in _CONTACT_FIELDS:
        value = getattr(data, name)
        value = (value.strip() or None) if name in ("phone", "email") else value
        value = value.strip() if isinstance(value, str) else value
        if getattr(contact, name) != value:
            setattr(contact, name, value)
            changed.append(name)
    return changed


def add_contact(session: Session, client_id: int, data: ContactIn) -> Contact:
    """Add a contact at the end of the list."""
    last = session.scalar(select(func.max(Contact.position)).where(Contact.client_id == client_id))
    contact = Contact(client_id=client_id, name="", relation="other", position=(last or 0) + 1)
    _set(contact, data)
    session.add(contact)
    session.flush()
    return contact


def remove_contact(session: Session, client_id: int, contact_id: int) -> None:
    """Remove one of the client's contacts (404 when the client has none of that id)."""
    contact = session.get(Contact, contact_id)
    if contact is None or contact.client_id != client_id:
        raise NotFound(f"no contact {contact_id} of client {client_id}")
    session.delete(contact)
    session.flush()


def replace_contacts(
    session: Session, client_id: int, items: Sequence[ContactIn]
) -> tuple[list[Contact], str]:
    """Make the list ``items``, in that order; return it and what changed, by contact id and field name."""
    before = contacts_of(session, client_id)
    by_id = {c.id: c for c in before}
    unknown = [i.id for i in items if i.id is not None and i.id not in by_id]
    if unknown:
        raise NotFound(f"no contact {unknown[0]} of client {client_id}")
    ids = [i.id for i in items if i.id is not None]
    if len(ids) != len(set(ids)):
        raise Unprocessable("a contact appears twice in the list")
    said: list[str] = []
    for gone in (c for c in before if c.id not in ids):
        session.delete(gone)
        said.append(f"removed {gone.id}")
    after = []
    for position, item in enumerate(items, start=1):
        if item.id is None:
            contact = Contact(client_id=client_id, name="", relation="other")
            _set(contact, item)
            session.add(contact)
            session.flush()
            said.append(f"added {contact.id}")
        else:
            contact = by_id[item.id]
            fields = _set(contact, item)
            if fields:
                said.append(f"changed {contact.id}: {', '.join(fields)}")
        contact.position = position
        after.append(contact)
    if [c.id for c in before if c.id in ids] != ids:
        said.append("reordered")
    session.flush()
    return after, "; ".join(said) or "unchanged"
