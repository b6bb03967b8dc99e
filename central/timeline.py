"""One timeline of a client across every channel: alerts, doses, calls, notes, visits and maintenance
windows, newest first.

Each entry has a key ``(at_ms, type, id)``; the timeline is ordered by it, descending, and a page ends
with the key of its last entry as the cursor of the next (``"<at_ms>:<type>:<id>"``; a bare ``<at_ms>``
means "strictly before that time"). Every source is read with the same cursor condition and a limit, then
the sources are merged: no entry is lost or shown twice at a page boundary, even when several share a time.

Doses: the dose instances of the schedule (taken, missed, taken_late), and the dispenser's own dose reports
(taken, missed) that match no scheduled instance (the monitor's rule, ``care.dose_match``) — a report that
does match is the same dose, already shown by its instance.

Maintenance windows (the client's own and its devices'): a ``window`` entry when one started (running or
over; a planned one is not history yet), a ``window_end`` entry once it is over — "what is this client's
state" depends on ``now_ms`` here, so the caller passes it — and a ``suppression`` entry for every alert a
window held back: what was quieted stays visible.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import ColumnElement, and_, or_, select, true
from sqlalchemy.orm import Session, aliased

from care.dose_match import match_bounds, report_target, scheduled
from care.lifecycles import DoseState
from storage.calls_models import CallRecord
from storage.models import (
    Alert,
    AlertNote,
    Device,
    DeviceEvent,
    DoseInstance,
    MaintenanceWindow,
    Suppression,
    User,
    Visit,
)
from storage.records_models import ClientNote

__all__ = ["TYPES", "BadCursor", "Cursor", "client_timeline", "merge_page"]

TYPES: Final = (
    "alert",
    "alert_note",
    "call",
    "client_note",
    "dose",
    "dose_report",
    "suppression",
    "visit",
    "window",
    "window_end",
)
_STR_ID_TYPES: Final = frozenset({"call"})
_CURSOR = re.compile(r"(\d{1,15})(?::([a-z_]{1,20}):([0-9a-f]{1,32}))?")
# The dose instances the timeline shows: those decided (a pending or cancelled dose is no history).
_DOSE_STATES: Final = (DoseState.TAKEN, DoseState.MISSED, DoseState.TAKEN_LATE)


class BadCursor(ValueError):
    """A ``before`` cursor that is not one this module handed out."""


@dataclass(frozen=True, slots=True)
class Cursor:
    """The key of the last entry shown; the next page starts strictly after it (older)."""

    at_ms: int
    type: str = ""  # "" sorts before every type: a bare time cursor excludes entries at that time
    id: int | str = 0

    @classmethod
    def parse(cls, text: str) -> Cursor:
        match = _CURSOR.fullmatch(text)
        if match is None:
            raise BadCursor("before must be a time in ms or a cursor from next_before")
        at, type_, ident = match.groups()
        if type_ is None:
            return cls(int(at))
        if type_ not in TYPES:
            raise BadCursor(f"unknown entry type {type_} in the cursor")
        if type_ in _STR_ID_TYPES:
            return cls(int(at), type_, ident)
        if not ident.isdigit():
            raise BadCursor("a cursor's id must be a number for that type")
        return cls(int(at), type_, int(ident))

    def __str__(self) -> str:
        return f"{self.at_ms}:{self.type}:{self.id}" if self.type else str(self.at_ms)


def _key(entry: dict[str, Any]) -> tuple[int, str, int | str]:
    return (entry["at_ms"], entry["type"], entry["id"])


def merge_page(sources: list[list[dict[str, Any]]], limit: int) -> tuple[list[dict[str, Any]], str | None]:
    """Merge entries of several sources (each read with ``limit + 1``): one page and the next cursor."""
    merged = sorted((e for source in sources for e in source), key=_key, reverse=True)
    page = merged[:limit]
    more = len(merged) > limit
    return page, (str(Cursor(*_key(page[-1]))) if more and page else None)


def _older(cursor: Cursor | None, type_: str, at_col: Any, id_col: Any) -> ColumnElement[bool]:
    """SQL for "this source's (at, type, id) sorts before the cursor"."""
    if cursor is None:
        return true()
    if type_ < cursor.type:
        return at_col <= cursor.at_ms  # type: ignore[no-any-return]
    if type_ > cursor.type:
        return at_col < cursor.at_ms  # type: ignore[no-any-return]
    return or_(at_col < cursor.at_ms, and_(at_col == cursor.at_ms, id_col < cursor.id))


def _alerts(s: Session, client_id: int, c: Cursor | None, n: int) -> list[dict[str, Any]]:
    rows = s.execute(
        select(Alert, User.display_name)
        .outerjoin(User, User.id == Alert.acknowledged_by)
        .where(Alert.client_id == client_id, _older(c, "alert", Alert.opened_ms, Alert.id))
        .order_by(Alert.opened_ms.desc(), Alert.id.desc())
        .limit(n)
    ).all()
    return [
        {
            "type": "alert",
            "id": a.id,
            "at_ms": a.opened_ms,
            "kind": a.kind,
            "alarm": a.kind == "alarm",
            "priority": a.priority,
            "state": a.state,
            "detail": a.detail,
            "count": a.count,
            "outcome": a.outcome,
            "answer_ms": a.acknowledged_ms - a.opened_ms if a.acknowledged_ms is not None else None,
            "acknowledged_by": acker,
            "resolved_ms": a.resolved_ms,
        }
        for a, acker in rows
    ]


def _alert_notes(s: Session, client_id: int, c: Cursor | None, n: int) -> list[dict[str, Any]]:
    rows = s.execute(
        select(AlertNote, Alert.kind, User.display_name)
        .join(Alert, Alert.id == AlertNote.alert_id)
        .outerjoin(User, User.id == AlertNote.user_id)
        .where(Alert.client_id == client_id, _older(c, "alert_note", AlertNote.at_ms, AlertNote.id))
        .order_by(AlertNote.at_ms.desc(), AlertNote.id.desc())
        .limit(n)
    ).all()
    return [
        {
            "type": "alert_note",
            "id": note.id,
            "at_ms": note.at_ms,
            "alert_id": note.alert_id,
            "alert_kind": kind,
            "text": note.text,
            "by": name,
        }
        for note, kind, name in rows
    ]


def _client_notes(s: Session, client_id: int, c: Cursor | None, n: int) -> list[dict[str, Any]]:
    rows = s.execute(
        select(ClientNote, User.display_name)
        .join(User, User.id == ClientNote.user_id)
        .where(ClientNote.client_id == client_id, _older(c, "client_note", ClientNote.at_ms, ClientNote.id))
        .order_by(ClientNote.at_ms.desc(), ClientNote.id.desc())
        .limit(n)
    ).all()
    return [
        {"type": "client_note", "id": note.id, "at_ms": note.at_ms, "text": note.text, "by": name}
        for note, name in rows
    ]


def _doses(s: Session, client_id: int, c: Cursor | None, n: int) -> list[dict[str, Any]]:
    rows = s.scalars(
        select(DoseInstance)
        .where(
            DoseInstance.client_id == client_id,
            DoseInstance.state.in_(_DOSE_STATES),
            _older(c, "dose", DoseInstance.due_ms, DoseInstance.id),
        )
        .order_by(DoseInstance.due_ms.desc(), DoseInstance.id.desc())
        .limit(n)
    ).all()
    return [
        {
            "type": "dose",
            "id": d.id,
            "at_ms": d.due_ms,
            "dose_id": d.dose_id,
            "state": d.state,
            "taken_ms": d.taken_ms,
            "device_id": d.device_id,
        }
        for d in rows
    ]


def _dose_reports(s: Session, client_id: int, c: Cursor | None, n: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    cursor = c
    while len(out) < n:
        events = s.scalars(
            select(DeviceEvent)
            .join(Device, Device.id == DeviceEvent.device_id)
            .where(
                Device.client_id == client_id,
                DeviceEvent.kind == "dose",
                _older(cursor, "dose_report", DeviceEvent.received_ms, DeviceEvent.id),
            )
            .order_by(DeviceEvent.received_ms.desc(), DeviceEvent.id.desc())
            .limit(n)
        ).all()
        for event in events:
            body = _json(event.payload)
            if body.get("event") in ("taken", "missed") and not _is_scheduled(s, client_id, event, body):
                out.append(
                    {
                        "type": "dose_report",
                        "id": event.id,
                        "at_ms": event.received_ms,
                        "device_ts_ms": event.device_ts_ms,
                        "device_id": event.device_id,
                        "dose_id": str(body.get("dose_id", "")),
                        "state": body["event"],
                    }
                )
        if len(events) < n:
            break
        cursor = Cursor(events[-1].received_ms, "dose_report", events[-1].id)
    return out[:n]


def _is_scheduled(s: Session, client_id: int, event: DeviceEvent, body: dict[str, Any]) -> bool:
    """Is the report about a scheduled instance (``care.dose_match``)?"""
    due = body.get("due_ts")
    target = report_target(due if isinstance(due, int) else None, event.received_ms)
    low, high = match_bounds(target)
    dues = s.scalars(
        select(DoseInstance.due_ms).where(
            DoseInstance.client_id == client_id,
            DoseInstance.dose_id == str(body.get("dose_id", "")),
            DoseInstance.due_ms > low,
            DoseInstance.due_ms < high,
        )
    )
    return scheduled(dues, target)


def _json(payload: str) -> dict[str, Any]:
    try:
        body = json.loads(payload)
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _calls(s: Session, client_id: int, c: Cursor | None, n: int) -> list[dict[str, Any]]:
    rows = s.execute(
        select(CallRecord, User.display_name)
        .outerjoin(User, User.id == CallRecord.nurse_user_id)
        .where(CallRecord.client_id == client_id, _older(c, "call", CallRecord.started_ms, CallRecord.id))
        .order_by(CallRecord.started_ms.desc(), CallRecord.id.desc())
        .limit(n)
    ).all()
    return [
        {
            "type": "call",
            "id": rec.id,
            "at_ms": rec.started_ms,
            "kind": rec.kind,
            "direction": rec.direction,
            "state": rec.state,
            "outcome": rec.end_reason,
            "answer_ms": rec.answered_ms - rec.started_ms if rec.answered_ms is not None else None,
            "duration_s": round((rec.ended_ms - rec.connected_ms) / 1000, 1)
            if rec.ended_ms and rec.connected_ms
            else 0.0,
            "by": name,
        }
        for rec, name in rows
    ]


def _visits(s: Session, client_id: int, c: Cursor | None, n: int) -> list[dict[str, Any]]:
    rows = s.scalars(
        select(Visit)
        .where(Visit.client_id == client_id, _older(c, "visit", Visit.sent_ms, Visit.id))
        .order_by(Visit.sent_ms.desc(), Visit.id.desc())
        .limit(n)
    ).all()
    return [
        {
            "type": "visit",
            "id": v.id,
            "at_ms": v.sent_ms,
            "alert_id": v.alert_id,
            "visitor": v.visitor,
            "state": v.state,
            "target_ms": v.target_ms,
            "arrived_ms": v.arrived_ms,
        }
        for v in rows
    ]


def _client_windows(client_id: int) -> ColumnElement[bool]:
    """The windows about a client: its own, and those of its devices."""
    devices = select(Device.id).where(Device.client_id == client_id)
    return or_(MaintenanceWindow.client_id == client_id, MaintenanceWindow.device_id.in_(devices))


def _window_rows(s: Session, condition: ColumnElement[bool], order: Any, n: int) -> list[Any]:
    creator, ender = aliased(User), aliased(User)
    return list(
        s.execute(
            select(MaintenanceWindow, creator.display_name, ender.display_name, Device.label)
            .outerjoin(creator, creator.id == MaintenanceWindow.created_by)
            .outerjoin(ender, ender.id == MaintenanceWindow.ended_by)
            .outerjoin(Device, Device.id == MaintenanceWindow.device_id)
            .where(condition)
            .order_by(*order)
            .limit(n)
        ).all()
    )


def _windows(s: Session, client_id: int, c: Cursor | None, n: int, now_ms: int) -> list[dict[str, Any]]:
    """A window's start, once it has started (a window cancelled before it ran never started)."""
    rows = _window_rows(
        s,
        and_(
            _client_windows(client_id),
            MaintenanceWindow.starts_ms <= now_ms,
            MaintenanceWindow.ends_ms > MaintenanceWindow.starts_ms,
            _older(c, "window", MaintenanceWindow.starts_ms, MaintenanceWindow.id),
        ),
        (MaintenanceWindow.starts_ms.desc(), MaintenanceWindow.id.desc()),
        n,
    )
    return [
        {
            "type": "window",
            "id": w.id,
            "at_ms": w.starts_ms,
            "starts_ms": w.starts_ms,
            "ends_ms": w.ends_ms,
            "running": w.ends_ms > now_ms,
            "reason": w.reason,
            "device_id": w.device_id,
            "device_label": label,
            "by": made_by,
            "ended_by": ended_by,
        }
        for w, made_by, ended_by, label in rows
    ]


def _window_ends(s: Session, client_id: int, c: Cursor | None, n: int, now_ms: int) -> list[dict[str, Any]]:
    """A window's end, once it is over: early (``ended_by`` says who) or as planned."""
    rows = _window_rows(
        s,
        and_(
            _client_windows(client_id),
            MaintenanceWindow.ends_ms <= now_ms,
            MaintenanceWindow.ends_ms > MaintenanceWindow.starts_ms,
            _older(c, "window_end", MaintenanceWindow.ends_ms, MaintenanceWindow.id),
        ),
        (MaintenanceWindow.ends_ms.desc(), MaintenanceWindow.id.desc()),
        n,
    )
    return [
        {
            "type": "window_end",
            "id": w.id,
            "at_ms": w.ends_ms,
            "starts_ms": w.starts_ms,
            "reason": w.reason,
            "device_id": w.device_id,
            "device_label": label,
            "early": w.ended_by is not None,
            "ended_by": ended_by,
        }
        for w, _made_by, ended_by, label in rows
    ]


def _suppressions(s: Session, client_id: int, c: Cursor | None, n: int) -> list[dict[str, Any]]:
    rows = s.execute(
        select(Suppression, MaintenanceWindow.reason)
        .join(MaintenanceWindow, MaintenanceWindow.id == Suppression.window_id)
        .where(
            Suppression.client_id == client_id,
            _older(c, "suppression", Suppression.at_ms, Suppression.id),
        )
        .order_by(Suppression.at_ms.desc(), Suppression.id.desc())
        .limit(n)
    ).all()
    return [
        {
            "type": "suppression",
            "id": q.id,
            "at_ms": q.at_ms,
            "window_id": q.window_id,
            "window_reason": reason,
            "kind": q.kind,
            "detail": q.detail,
            "device_id": q.device_id,
        }
        for q, reason in rows
    ]


_SOURCES: Final[list[Callable[[Session, int, Cursor | None, int], list[dict[str, Any]]]]] = [
    _alerts,
    _alert_notes,
    _calls,
    _client_notes,
    _doses,
    _dose_reports,
    _suppressions,
    _visits,
]
# Sources whose entries depend on the time asked at (a window starts or ends being history).
_TIMED_SOURCES: Final[list[Callable[[Session, int, Cursor | None, int, int], list[dict[str, Any]]]]] = [
    _windows,
    _window_ends,
]


def client_timeline(
    session: Session, client_id: int, *, before: Cursor | None, limit: int, now_ms: int
) -> tuple[list[dict[str, Any]], str | None]:
    """One page of the client's timeline, newest first, and the cursor of the next page (None at the end)."""
    pages = [source(session, client_id, before, limit + 1) for source in _SOURCES]
    pages += [source(session, client_id, before, limit + 1, now_ms) for source in _TIMED_SOURCES]
    return merge_page(pages, limit)
