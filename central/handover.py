"""The handover: the alerts of a shift — opened, answered and closed in it, or still running — with who
handled them, their outcome and every note, for the nurse who takes over (``GET /api/handover``)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Final

from pydantic import BaseModel, Field
from sqlalchemy import or_, select
from sqlalchemy.orm import Session, aliased

from storage.models import Alert, AlertNote, Client, User

__all__ = ["DEFAULT_HOURS", "MAX_ALERTS", "Handover", "HandoverAlert", "handover"]

# A shift: a day or night shift is 8-12 h; the console asks for the last 12 h unless told otherwise.
DEFAULT_HOURS: Final = 12
# More than a shift ever holds (the demo's busiest day is a few dozen); the newest are kept.
MAX_ALERTS: Final = 500


def handover(session: Session, since_ms: int, until_ms: int) -> list[dict[str, Any]]:
    """Every alert opened or resolved in ``[since_ms, until_ms)``, and every one still running, newest first,
    with its client, times, people, outcome and notes (oldest note first)."""
    acker, closer = aliased(User), aliased(User)
    in_window = or_(
        Alert.opened_ms.between(since_ms, until_ms - 1),
        Alert.resolved_ms.between(since_ms, until_ms - 1),
        Alert.state != "resolved",
    )
    rows = session.execute(
        select(Alert, Client.name, acker.display_name, closer.display_name)
        .join(Client, Client.id == Alert.client_id)
        .outerjoin(acker, acker.id == Alert.acknowledged_by)
        .outerjoin(closer, closer.id == Alert.resolved_by)
        .where(in_window, Alert.kind != "probe", Alert.opened_ms < until_ms)
        .order_by(Alert.opened_ms.desc(), Alert.id.desc())
        .limit(MAX_ALERTS)
    ).all()
    notes = _notes(session, [alert.id for alert, *_ in rows])
    return [
        {
            "id": alert.id,
            "kind": alert.kind,
            "priority": alert.priority,
            "state": alert.state,
            "detail": alert.detail,
            "count": alert.count,
            "client": {"id": alert.client_id, "name": client},
            "opened_ms": alert.opened_ms,
            "acknowledged_ms": alert.acknowledged_ms,
            "acknowledged_by": acked,
            "resolved_ms": alert.resolved_ms,
            "resolved_by": resolved,
            "outcome": alert.outcome,
            "notes": notes.get(alert.id, []),
        }
        for alert, client, acked, resolved in rows
    ]


def _notes(session: Session, alert_ids: list[int]) -> dict[int, list[dict[str, Any]]]:
    found: dict[int, list[dict[str, Any]]] = defaultdict(list)
    if not alert_ids:
        return found
    for note, author in session.execute(
        select(AlertNote, User.display_name)
        .outerjoin(User, User.id == AlertNote.user_id)
        .where(AlertNote.alert_id.in_(alert_ids))
        .order_by(AlertNote.at_ms, AlertNote.id)
    ).all():
        found[note.alert_id].append({"at_ms": note.at_ms, "by": author, "text": note.text})
    return found


# -- what the route answers ----------------------------------------------------------------------------


class HandoverClient(BaseModel):
    id: int
    name: str


class HandoverNote(BaseModel):
    at_ms: int
    by: str | None = Field(description="who wrote it (null: the service itself)")
    text: str


class HandoverAlert(BaseModel):
    """One alert of the shift: what, whose, when it was opened, answered and closed, by whom, how."""

    id: int
    kind: str
    priority: int
    state: str
    detail: str
    count: int
    client: HandoverClient
    opened_ms: int
    acknowledged_ms: int | None
    acknowledged_by: str | None
    resolved_ms: int | None
    resolved_by: str | None
    outcome: str | None
    notes: list[HandoverNote]


class Handover(BaseModel):
    """The alerts opened or closed in ``[since_ms, until_ms)`` and every one still running, newest first."""

    since_ms: int
    until_ms: int
    undo_window_ms: int = Field(description="how long the nurse who resolved an alert may undo it")
    outcomes: list[str] = Field(description="the outcome codes a nurse chooses from, in the console's order")
    alerts: list[HandoverAlert]
