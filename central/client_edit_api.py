"""Editing a client's record: its fields, the key-safe code (revealed only on its own request) and the
ordered contact list.

Care nurses, supervisors and admins may edit every client; district nurses their own district's
(``client.edit``, docs/privacy.md). Each request passes the record's reason rule
(:func:`central.client_gate.open_record`: a reason when no alert of the user concerns the client) and writes
one audit row naming what changed — field names and contact ids, never a value; the key-safe code is never
read back except by ``POST .../key-safe/reveal`` (``client.key_safe``), audited as ``client.key_safe.reveal``.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Response
from sqlalchemy.orm import Session

from storage.models import Client

from .auth import SignedInUser
from .client_edit import (
    add_contact,
    apply_fields,
    contact_view,
    contacts_of,
    replace_contacts,
)
from .client_gate import ClientId, GivenReason, open_record
from .deps import Ctx, require
from .schemas import (
    ClientFieldsChanged,
    ClientFieldsEdit,
    ContactIn,
    ContactList,
    ContactView,
    ContactViews,
    KeySafeCode,
)

__all__ = ["router"]

router = APIRouter(tags=["clients"])

EditUser = Annotated[SignedInUser, Depends(require("client.edit"))]
ReadUser = Annotated[SignedInUser, Depends(require("client.read"))]
KeySafeUser = Annotated[SignedInUser, Depends(require("client.key_safe"))]


@router.put("/api/clients/{client_id}", response_model=ClientFieldsChanged)
def edit_client(
    client_id: ClientId,
    body: ClientFieldsEdit,
    ctx: Ctx,
    user: EditUser,
    given: GivenReason,
) -> dict[str, Any]:
    """Change the fields given (phone, GP, conditions, access, key-safe code …); audited by field name."""
    changes = body.model_dump(exclude_none=True)

    def work(_session: Session, client: Client) -> dict[str, Any]:
        return {"changed": apply_fields(client, changes), "key_safe_set": bool(client.key_safe_code)}

    return open_record(
        ctx,
        user,
        client_id,
        given,
        "client.edit",
        work,
        detail=lambda r: "changed: " + (", ".join(r["changed"]) or "nothing"),
    )


@router.post("/api/clients/{client_id}/key-safe/reveal", response_model=KeySafeCode)
def reveal_key_safe(
    client_id: ClientId,
    ctx: Ctx,
    user: KeySafeUser,
    given: GivenReason,
    response: Response,
) -> dict[str, str]:
    """The key-safe code, to let someone in; every reveal is an audit row (``client.key_safe.reveal``)."""
    response.headers["Cache-Control"] = "no-store"

    def work(_session: Session, client: Client) -> dict[str, str]:
        return {"code": client.key_safe_code}

    return open_record(
        ctx,
        user,
        client_id,
        given,
        "client.key_safe.reveal",
        work,
        detail=lambda r: "revealed" if r["code"] else "none set",
    )


@router.get("/api/clients/{client_id}/contacts", response_model=ContactViews)
def list_contacts(
    client_id: ClientId,
    ctx: Ctx,
    user: ReadUser,
    given: GivenReason,
) -> dict[str, Any]:
    """The client's contact persons in the order they are called."""

    def work(session: Session, client: Client) -> dict[str, Any]:
        return {"items": [contact_view(c) for c in contacts_of(session, client.id)]}

    return open_record(
        ctx,
        user,
        client_id,
        given,
        "client.contacts.read",
        work,
        detail=lambda r: f"{len(r['items'])} contacts",
    )


@router.post("/api/clients/{client_id}/contacts", status_code=201, response_model=ContactView)
def add_client_contact(
    client_id: ClientId,
    body: ContactIn,
    ctx: Ctx,
    user: EditUser,
    given: GivenReason,
) -> dict[str, Any]:
    """Add a contact person at the end of the list."""

    def work(session: Session, client: Client) -> dict[str, Any]:
        return contact_view(add_contact(session, client.id, body))

    return open_record(
        ctx, user, client_id, given, "client.contact.add", work, detail=lambda r: f"added {r['id']}"
    )


@router.put("/api/clients/{client_id}/contacts", response_model=ContactViews)
def replace_client_contacts(
    client_id: ClientId,
    body: ContactList,
    ctx: Ctx,
    user: EditUser,
    given: GivenReason,
) -> dict[str, Any]:
    """Set the whole ordered list: edit, reorder, add (no id) and remove (left out) in one request."""
    said: list[str] = []

    def work(session: Session, client: Client) -> dict[str, Any]:
        contacts, what = replace_contacts(session, client.id, body.items)
        said.append(what)
        return {"items": [contact_view(c) for c in contacts]}

    return open_record(ctx, user, client_id, given, "client.contacts.change", work, detail=lambda _r: said[0])
