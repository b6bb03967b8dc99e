"""Follow-up visits: someone sent to the client's home is tracked until arrival is confirmed.

A visit is ``underway`` until the visitor is at the door (``arrived``); its lifecycle is
``care.lifecycles.VISIT``. Sending one schedules a ``visit_check`` step at the target time, which opens a
``visit_overdue`` alert if the visitor has not arrived by then (``care.steps``).
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from storage.models import Alert, AlertNote, EscalationStep, Visit

from .alert_store import AlertNotFound, policy_for, resolve_key
from .errors import CareError
from .lifecycles import VISIT, StepAction, VisitEvent, VisitState
from .rules import OpenAlert, open_key
from .step_store import add_step, cancel_steps

__all__ = ["VisitNotFound", "confirm_arrival", "overdue_alert", "send_visit"]


class VisitNotFound(CareError, LookupError):
    """No visit with that id, or it is no longer under way."""


def _subject(visit_id: int) -> str:
    """What a visit's overdue alert is about: repeats are counted on it, arrival resolves it."""
    return f"visit:{visit_id}"


def overdue_alert(visit: Visit, now_ms: int) -> OpenAlert:
    """The alert of a visitor not yet arrived at ``now_ms``."""
    minutes = (now_ms - visit.sent_ms) // 60_000
    return OpenAlert(
        "visit_overdue", 2, f"{visit.visitor} not yet arrived after {minutes} min", subject=_subject(visit.id)
    )


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
        state=VisitState.UNDERWAY,
    )
    session.add(visit)
    session.flush()
    add_step(session, action=StepAction.VISIT_CHECK, due_ms=visit.target_ms, now_ms=now_ms, visit_id=visit.id)
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
    arrived = VISIT.after(visit.state, VisitEvent.ARRIVE) if visit is not None else None
    if visit is None or arrived is None:
        raise VisitNotFound(visit_id)
    visit.state, visit.arrived_ms = arrived, now_ms
    cancel_steps(session, EscalationStep.visit_id == visit.id, now_ms)
    minutes = (now_ms - visit.sent_ms) // 60_000
    resolve_key(
        session,
        open_key("visit_overdue", visit.client_id, None, _subject(visit.id)),
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
