"""Writing and cancelling ``escalation_steps`` rows: one way to schedule a timer, one way to stop timers.

A step names what it is about by foreign key: its alert, dose instance or visit. ``care.steps`` runs the
steps that come due.
"""

from __future__ import annotations

from sqlalchemy import ColumnElement, update
from sqlalchemy.orm import Session

from storage.models import EscalationStep

from .lifecycles import STEP, StepAction, StepEvent, StepState

__all__ = ["add_step", "cancel_steps"]


def add_step(
    session: Session,
    *,
    action: StepAction,
    due_ms: int,
    now_ms: int,
    level: int = 0,
    alert_id: int | None = None,
    dose_instance_id: int | None = None,
    visit_id: int | None = None,
) -> EscalationStep:
    """Schedule ``action`` at ``due_ms`` for the alert, dose instance or visit named (in the caller's
    transaction)."""
    step = EscalationStep(
        alert_id=alert_id,
        dose_instance_id=dose_instance_id,
        visit_id=visit_id,
        action=action,
        level=level,
        due_ms=due_ms,
        state=StepState.PENDING,
        created_ms=now_ms,
    )
    session.add(step)
    return step


def cancel_steps(session: Session, about: ColumnElement[bool], now_ms: int) -> None:
    """Cancel the pending steps that ``about`` selects (``EscalationStep.visit_id == 3``), in the caller's
    transaction."""
    session.execute(
        update(EscalationStep)
        .where(about, STEP.where(EscalationStep.state, StepEvent.CANCEL))
        .values(state=STEP.target(StepEvent.CANCEL), done_ms=now_ms)
        .execution_options(synchronize_session=False)
    )
