"""``carealarm clients edit`` and ``carealarm contacts add|list|remove``: the client record from the shell.

The same changes as the console's edit mode (:mod:`central.client_edit`), under the same rules: ``--by``
names the console user on whose behalf the change is made; her role must be allowed to edit a record
(``client.edit``) and, for a district nurse, the client must be in her district. Each change writes the
same audit row as the API (``client.edit``, ``client.contact.add`` …, reason "command line"), naming
fields and contact ids, never a value. The key-safe code is read from standard input (``--key-safe-stdin``),
so it stays out of the shell's history and the process list.
"""

from __future__ import annotations

import argparse
import sys
from typing import Final, TypeAlias

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from central import audit
from central.access import in_scope, may
from central.client_edit import add_contact, apply_fields, contacts_of, remove_contact
from central.errors import CentralError
from central.schemas import ClientFieldsEdit, ContactIn
from storage.models import Client, User
from storage.registry import RegistryError

__all__ = ["add_client_edit", "add_contact_commands", "run_clients_cli"]

_Commands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
_REASON: Final = "command line"
# option -> the record's field.
_FIELD_OPTIONS: Final = {
    "phone": "phone",
    "birth_date": "birth_date",
    "language": "language",
    "gp": "gp",
    "pharmacy": "pharmacy",
    "conditions": "conditions",
    "allergies": "allergies",
    "mobility": "mobility",
    "pets": "pets",
    "access": "access_notes",
    "care_notes": "care_notes",
}
_RELATIONS: Final = ("informal_carer", "family", "neighbour", "gp", "pharmacy", "other")


def _by(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--by", required=True, metavar="USERNAME", help="the console user making the change")


def add_client_edit(c_sub: _Commands) -> None:
    """``clients edit ID --phone ... --gp ...`` (under ``clients``)."""
    edit = c_sub.add_parser(
        "edit",
        help="change a client's record (phone, GP, conditions, access …)",
        description="Change the fields given; the others stay. An empty value ('') empties a field. "
        "The key-safe code is read from standard input with --key-safe-stdin. Audited as client.edit.",
    )
    edit.add_argument("client_id", type=int)
    _by(edit)
    for option in _FIELD_OPTIONS:
        edit.add_argument(f"--{option.replace('_', '-')}", dest=option, default=None)
    edit.add_argument("--key-safe-stdin", action="store_true", help="read the key-safe code from stdin")


def add_contact_commands(sub: _Commands) -> None:
    """``contacts add|list|remove``."""
    contacts = sub.add_parser(
        "contacts", help="manage a client's contact persons", description="A client's contact persons."
    )
    k_sub = contacts.add_subparsers(dest="action", required=True, metavar="ACTION")
    add = k_sub.add_parser("add", help="add a contact person at the end of the list")
    add.add_argument("client_id", type=int)
    _by(add)
    add.add_argument("--name", required=True)
    add.add_argument("--relation", choices=_RELATIONS, default="family")
    add.add_argument("--phone", default="")
    add.add_argument("--email", default="")
    add.add_argument("--reachable", default="", help='when reachable, e.g. "weekdays after 17:00"')
    add.add_argument("--keyholder", action="store_true", help="has a key to the home")
    add.add_argument("--missed-dose", action="store_true", help="gets missed-dose messages")
    listing = k_sub.add_parser("list", help="list the contact persons in their order")
    listing.add_argument("client_id", type=int)
    _by(listing)
    remove = k_sub.add_parser("remove", help="remove a contact person")
    remove.add_argument("client_id", type=int)
    remove.add_argument("contact_id", type=int)
    _by(remove)


def _allowed(session: Session, username: str, client_id: int) -> tuple[User, Client]:
    """The acting user and the client, when her role and district allow the change."""
    user = session.scalars(select(User).where(User.username == username)).first()
    if user is None or user.disabled_ms is not None:
        raise RegistryError(f"no active user {username}")
    if not may(user.role, "client.edit"):
        raise RegistryError(f"the role {user.role} may not edit a client's record")
    client = session.get(Client, client_id)
    if client is None or client.system:
        raise RegistryError(f"no client {client_id}")
    if not in_scope(user.role, user.district, client.district):
        raise RegistryError(f"client {client_id} is outside the district of {username}")
    return user, client


def run_clients_cli(session: Session, args: argparse.Namespace, now_ms: int) -> None:
    """Run ``clients edit`` or one ``contacts`` action; RegistryError with a clear message when refused."""
    user, client = _allowed(session, args.by, args.client_id)
    try:
        action, detail = _run(session, args, client)
    except (CentralError, ValidationError) as exc:
        raise RegistryError(str(exc).splitlines()[0]) from exc
    audit.record(session, user.id, action, now_ms=now_ms, client_id=client.id, reason=_REASON, detail=detail)


def _run(session: Session, args: argparse.Namespace, client: Client) -> tuple[str, str]:
    if args.command == "clients":
        changes = {
            field: getattr(args, opt)
            for opt, field in _FIELD_OPTIONS.items()
            if getattr(args, opt) is not None
        }
        if args.key_safe_stdin:
            changes["key_safe_code"] = sys.stdin.readline().strip()
        ClientFieldsEdit.model_validate(changes)  # the API's rules: a real date, a phone number's characters
        changed = apply_fields(client, changes)
        print(f"client {client.id}: " + (f"changed {', '.join(changed)}" if changed else "nothing changed"))
        return "client.edit", "changed: " + (", ".join(changed) or "nothing")
    if args.action == "add":
        data = ContactIn(
            name=args.name,
            relation=args.relation,
            phone=args.phone,
            email=args.email,
            reachable=args.reachable,
            keyholder=args.keyholder,
            notify_missed_dose=args.missed_dose,
        )
        contact = add_contact(session, client.id, data)
        print(f"contact {contact.id}: {contact.name}")
        return "client.contact.add", f"added {contact.id}"
    if args.action == "remove":
        remove_contact(session, client.id, args.contact_id)
        print(f"contact {args.contact_id} removed")
        return "client.contacts.change", f"removed {args.contact_id}"
    contacts = contacts_of(session, client.id)
    for n, c in enumerate(contacts, start=1):
        flags = [f for f, on in (("keyholder", c.keyholder), ("missed-dose", c.notify_missed_dose)) if on]
        print(
            f"{n}. [{c.id}] {c.name} ({c.relation}) {c.phone or '-'} {c.reachable} {' '.join(flags)}".rstrip()
        )
    return "client.contacts.read", f"{len(contacts)} contacts"
