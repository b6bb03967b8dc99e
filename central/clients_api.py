"""The client's whole picture: list and search, the record (who, where, devices, schedule, contacts, open
alerts), one timeline across every channel, care notes, and the audit log.

Every endpoint passes :func:`central.access.require` for its action (403 for a role that may not), keeps a
district nurse to her own district (403), and writes one audit row (:func:`central.audit.record`) in the
transaction of its work. Opening a client's record that no alert of the user concerns needs a reason
(428 without one); refusals of that kind are audited too (``<action>.refused``).

No personal data travels in a URL: clients are named by their opaque id, a name search is a POST body, and
the reason may be sent in the ``X-Access-Reason`` header (percent-encoded UTF-8) instead of ``?reason=``.
"""

from __future__ import annotations

import csv
import io
from typing import Annotated, Any, Final, Literal

from fastapi import APIRouter, Depends, Query, Response
from pydantic import BaseModel, Field
from sqlalchemy import and_, false, select
from sqlalchemy.orm import Session

from storage.models import Alert, Client, Contact, Device, MedicationDose
from storage.records_models import ClientNote

from . import audit, client_edit_api
from .access import confined_to
from .auth import SignedInUser
from .client_edit import client_fields, contact_view
from .client_gate import ClientId, GivenReason, open_record
from .deps import Ctx, require
from .errors import Unprocessable
from .ids import MAX_ID
from .schemas import AuditPage, ClientNoteView, ClientPage, ClientRecord, ClientSearch, TimelinePage
from .timeline import Cursor, client_timeline
from .views import alert_views

__all__ = ["router"]

router = APIRouter(tags=["clients"])
router.include_router(client_edit_api.router)  # editing the record, its key safe and its contacts

# A CSV export holds at most this many rows (newest first); older ones: export again with before_id.
AUDIT_CSV_ROWS: Final = 10_000
AUDIT_CSV: Final[dict[int | str, dict[str, Any]]] = {
    200: {"content": {"text/csv": {"schema": {"type": "string"}}}, "description": "with format=csv"}
}
ListUser = Annotated[SignedInUser, Depends(require("client.list"))]
ReadUser = Annotated[SignedInUser, Depends(require("client.read"))]
TimelineUser = Annotated[SignedInUser, Depends(require("client.timeline"))]
NoteUser = Annotated[SignedInUser, Depends(require("client.note"))]
AuditUser = Annotated[SignedInUser, Depends(require("audit.read"))]


class SearchRequest(BaseModel):
    q: str = Field(min_length=1, max_length=100, description="part of the client's name")
    limit: int = Field(default=20, ge=1, le=100)


class NoteRequest(BaseModel):
    text: str = Field(min_length=1, max_length=2000)


def _summary(client: Client) -> dict[str, Any]:
    return {"id": client.id, "name": client.name, "address": client.address, "district": client.district}


def _scoped(user: SignedInUser) -> Any:
    """The SQL condition for the clients ``user`` may see."""
    district = confined_to(user.role, user.district)
    people = Client.system.is_(False)  # never the service's own probe client
    if district is None:
        return people
    return and_(people, Client.district == district) if district else false()


@router.get("/api/clients", response_model=ClientPage)
def list_clients(
    ctx: Ctx,
    user: ListUser,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> dict[str, Any]:
    """The clients you may see (a district nurse: her district's), by name; ``next_offset`` pages on."""
    with ctx.sessions.begin() as session:
        rows = session.scalars(
            select(Client)
            .where(_scoped(user))
            .order_by(Client.name, Client.id)
            .offset(offset)
            .limit(limit + 1)
        ).all()
        items = [_summary(c) for c in rows[:limit]]
        audit.record(session, user, "client.list", now_ms=ctx.clock_ms(), detail=f"{len(items)} listed")
    return {"items": items, "next_offset": offset + limit if len(rows) > limit else None}


@router.post("/api/clients/search", response_model=ClientSearch)
def search_clients(body: SearchRequest, ctx: Ctx, user: ListUser) -> dict[str, Any]:
    """Find clients you may see by part of their name (a POST, so no name ends up in a URL)."""
    with ctx.sessions.begin() as session:
        rows = session.scalars(
            select(Client)
            .where(_scoped(user), Client.name.icontains(body.q, autoescape=True))
            .order_by(Client.name, Client.id)
            .limit(body.limit)
        ).all()
        audit.record(
            session, user, "client.search", now_ms=ctx.clock_ms(), detail=f"search: {body.q} ({len(rows)})"
        )
        return {"items": [_summary(c) for c in rows]}


def _device(d: Device) -> dict[str, Any]:
    return {
        "id": d.id,
        "kind": d.kind,
        "label": d.label,
        "status": "unknown" if d.online is None else ("online" if d.online else "offline"),
        "battery": d.battery,
        "last_seen_ms": d.last_seen_ms,
        "signal": d.signal,
        "firmware": d.firmware,
    }


def _record(session: Session, client: Client) -> dict[str, Any]:
    devices = session.scalars(select(Device).where(Device.client_id == client.id).order_by(Device.id)).all()
    doses = session.scalars(
        select(MedicationDose)
        .where(MedicationDose.client_id == client.id)
        .order_by(MedicationDose.at, MedicationDose.dose_id)
    ).all()
    contacts = session.scalars(
        select(Contact).where(Contact.client_id == client.id).order_by(Contact.position, Contact.id)
    )
    open_ids = list(
        session.scalars(select(Alert.id).where(Alert.client_id == client.id, Alert.state != "resolved"))
    )
    return {
        **_summary(client),
        **client_fields(client),
        "devices": [_device(d) for d in devices],
        "schedule": [
            {"dose_id": d.dose_id, "at": d.at, "label": d.label, "device_id": d.device_id} for d in doses
        ],
        "contacts": [contact_view(c) for c in contacts],
        "open_alerts": alert_views(session, open_ids) if open_ids else [],
    }


@router.get("/api/clients/{client_id}", response_model=ClientRecord)
def read_client(
    client_id: ClientId,
    ctx: Ctx,
    user: ReadUser,
    given: GivenReason,
) -> dict[str, Any]:
    """Who and where (with access instructions), devices, medication schedule, contacts, open alerts."""
    result: dict[str, Any] = open_record(ctx, user, client_id, given, "client.read", _record)
    return result


@router.get("/api/clients/{client_id}/timeline", response_model=TimelinePage)
def read_timeline(
    client_id: ClientId,
    ctx: Ctx,
    user: TimelineUser,
    given: GivenReason,
    before: Annotated[str | None, Query(max_length=60, description="next_before of the page before")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> dict[str, Any]:
    """Alarms and alerts, doses, calls, notes, visits, maintenance windows and what they held back, in one
    list, newest first; pages by ``before``."""
    cursor = Cursor.parse(before) if before is not None else None  # a bad one: BadCursor, 422
    now = ctx.clock_ms()

    def work(session: Session, client: Client) -> dict[str, Any]:
        items, next_before = client_timeline(session, client.id, before=cursor, limit=limit, now_ms=now)
        return {"items": items, "next_before": next_before}

    result: dict[str, Any] = open_record(
        ctx, user, client_id, given, "client.timeline", work, detail=f"before={before or ''}"
    )
    return result


@router.post("/api/clients/{client_id}/notes", status_code=201, response_model=ClientNoteView)
def add_client_note(
    client_id: ClientId,
    body: NoteRequest,
    ctx: Ctx,
    user: NoteUser,
    given: GivenReason,
) -> dict[str, Any]:
    """Write a care note on the client's timeline."""
    text = body.text.strip()
    if not text:
        raise Unprocessable("a note needs some text")
    now = ctx.clock_ms()

    def work(session: Session, client: Client) -> dict[str, Any]:
        note = ClientNote(client_id=client.id, user_id=user.id, at_ms=now, text=text)
        session.add(note)
        session.flush()
        return {
            "type": "client_note",
            "id": note.id,
            "at_ms": note.at_ms,
            "text": note.text,
            "by": user.display_name,
        }

    result: dict[str, Any] = open_record(ctx, user, client_id, given, "client.note", work)
    return result


@router.get("/api/audit", tags=["audit"], response_model=AuditPage, responses=AUDIT_CSV)
def read_audit(
    ctx: Ctx,
    user: AuditUser,
    user_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    client_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    action: Annotated[
        str | None, Query(max_length=64, description="an action, or a prefix ending in '.'")
    ] = None,
    since: Annotated[int | None, Query(ge=0, le=MAX_ID, description="from this time (ms), inclusive")] = None,
    until: Annotated[int | None, Query(ge=0, le=MAX_ID, description="to this time (ms), exclusive")] = None,
    before_id: Annotated[int | None, Query(ge=1, le=MAX_ID, description="next_before_id of a page")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    format: Annotated[
        Literal["json", "csv"],
        Query(description=f"json (a page) or csv (a download of up to {AUDIT_CSV_ROWS} rows from before_id)"),
    ] = "json",
) -> Any:
    """The audit log, newest first, filtered; supervisors and admins only. Reading it is audited too."""
    rows = AUDIT_CSV_ROWS if format == "csv" else limit
    filters = audit.AuditQuery(user_id, client_id, action or None, since, until, before_id, rows)
    with ctx.sessions.begin() as session:
        items, next_before_id = audit.query(session, filters)
        audit.record(
            session,
            user,
            "audit.export" if format == "csv" else "audit.read",
            now_ms=ctx.clock_ms(),
            client_id=client_id,
            detail=f"user_id={user_id} action={action} since={since} until={until} rows={len(items)}",
        )
    if format == "csv":
        out = io.StringIO()
        csv.writer(out).writerows(audit.csv_rows(items))
        return Response(
            out.getvalue(),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": 'attachment; filename="audit.csv"', "Cache-Control": "no-store"},
        )
    return {"items": items, "next_before_id": next_before_id}
