"""Follow-up visits: someone sent to the client's home is tracked until arrival is confirmed."""

from __future__ import annotations

from sqlalchemy import update
from sqlalchemy.orm import Session

from storage.models import Alert, AlertNote, EscalationStep, Visit

from .alert_store import AlertNotFound, policy_for, resolve_key
from .rules import open_key

__all__ = ["VisitNotFound", "confirm_arrival", "send_visit"]


class VisitNotFound(LookupError):
    """No visit with that id, or it is no longer under way."""


def send_visit(
    session: Session,
    *,
    alert_id: int,
    visitor: str,
    user_id: int | None,
    now_ms: int,
    target_s: int | None = None,
) -> Visit:
    """Record that ``visitor`` is on the way for an alert; escalate if not arrived by the target."""
    alert = session.get(Alert, alert_id)
    if alert is None:
        raise AlertNotFound(alert_id)
    target = target_s if target_s is not None else policy_for(session, alert.client_id).visit_target_s
    visit = Visit(
        alert_id=alert_id,
        client_id=alert.client_id,
        sent_by=user_id,
        visitor=visitor,
        sent_ms=now_ms,
        target_ms=now_ms + target * 1000,
        state="underway",
    )
    session.add(visit)
    session.flush()
    session.add(
        EscalationStep(
            subject=f"visit:{visit.id}",
            action="visit_check",
            level=0,
            due_ms=visit.target_ms,
            state="pending",
            created_ms=now_ms,
        )
    )
    session.add(
        AlertNote(
            alert_id=alert_id,
            user_id=user_id,
            at_ms=now_ms,
            text=f"{visitor} sent; expected within {target // 60} min",
        )
    )
    return visit


def confirm_arrival(session: Session, *, visit_id: int, user_id: int | None, now_ms: int) -> Visit:
    """The visitor is at the door: stop the visit's timer and close an overdue alert about it."""
    visit = session.get(Visit, visit_id)
    if visit is None or visit.state != "underway":
        raise VisitNotFound(visit_id)
    visit.state, visit.arrived_ms = "arrived", now_ms
    session.execute(
        update(EscalationStep)
        .where(EscalationStep.subject == f"visit:{visit.id}", EscalationStep.state == "pending")
        .values(state="cancelled", done_ms=now_ms)
        .execution_options(synchronize_session=False)
    )
    minutes = (now_ms - visit.sent_ms) // 60_000
    resolve_key(
        session,
        open_key("visit_overdue", visit.client_id, None, f"visit:{visit.id}"),
        "nurse_arrived",
        f"{visit.visitor} arrived after {minutes} min",
        now_ms,
    )
    if visit.alert_id is not None:
        session.add(
            AlertNote(
                alert_id=visit.alert_id,
                user_id=user_id,
                at_ms=now_ms,
                text=f"{visit.visitor} arrived after {minutes} min",
            )
        )
    return visit
