"""Timers that survive anything: pending steps live in ``escalation_steps``; due ones are claimed and run.

The database is the source of truth; the in-process scheduler only decides *when* to look. A step is
claimed and run inside one transaction (on PostgreSQL with ``FOR UPDATE SKIP LOCKED``, so with several
monitors each step runs once), and is marked done in that same transaction — a monitor killed mid-step
leaves it pending, and the next monitor to look runs it, late but once.

Each step is dispatched on its action from one table (``_HANDLERS``): escalate an alert, remind or check a
dose instance, check a visit. A step names its alert, dose instance or visit by foreign key.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Final
from zoneinfo import ZoneInfo

from sqlalchemy import case, select
from sqlalchemy.orm import Session

from storage.models import Alert, AlertChange, DoseInstance, EscalationStep, Visit

from .alert_store import open_alert, policy_for
from .alerts import AlertState
from .doses import check_missed, remind_if_needed
from .lifecycles import STEP, StepAction, StepEvent, VisitState
from .roster import page
from .rules import LADDER
from .visits import overdue_alert

__all__ = ["StepRun", "due_soon", "run_due_steps"]

log = logging.getLogger(__name__)

_DEFAULT_TZ = ZoneInfo("Europe/Amsterdam")


@dataclass
class StepRun:
    ran: int = 0
    late: int = 0  # steps that ran more than a second after their due time
    max_late_ms: int = 0
    alerts_changed: bool = False
    reminders: list[tuple[str, str]] = field(default_factory=list)  # (device id, dose id)


@dataclass(frozen=True, slots=True)
class _Batch:
    """What every step of one run shares: the transaction, the time, the channels, the tally."""

    session: Session
    now_ms: int
    channels: frozenset[str]
    tz: ZoneInfo
    out: StepRun


# Which due steps go first when many are due at once (everybody's 08:00 pills): an alarm's escalation must
# never wait behind a hundred thousand dose reminders. Actions not listed (dose reminders) go last.
_URGENT_FIRST: Final = (StepAction.ESCALATE, StepAction.VISIT_CHECK, StepAction.DOSE_CHECK)
_URGENCY = case(
    *((EscalationStep.action == action, rank) for rank, action in enumerate(_URGENT_FIRST)),
    else_=len(_URGENT_FIRST),
)


def run_due_steps(
    session: Session,
    now_ms: int,
    channels: frozenset[str],
    limit: int = 500,
    tz: ZoneInfo = _DEFAULT_TZ,
) -> StepRun:
    """Claim and run the most urgent steps due at ``now_ms`` (up to ``limit``); the caller commits."""
    query = (
        select(EscalationStep)
        .where(STEP.where(EscalationStep.state, StepEvent.RUN), EscalationStep.due_ms <= now_ms)
        .order_by(_URGENCY, EscalationStep.due_ms, EscalationStep.id)
        .limit(limit)
    )
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    batch = _Batch(session, now_ms, channels, tz, StepRun())
    out = batch.out
    steps = session.scalars(query).all()
    # Load the batch's dose instances in one query; the identity map then serves each step's lookup (it
    # holds objects weakly, so the list is kept alive for the loop).
    dose_ids = [s.dose_instance_id for s in steps if s.dose_instance_id is not None]
    prefetched = (
        list(session.scalars(select(DoseInstance).where(DoseInstance.id.in_(dose_ids)))) if dose_ids else []
    )
    for step in steps:
        handler = _HANDLERS.get(step.action)
        if handler is None:
            log.warning("steps: step %d has an unknown action %r; marked done", step.id, step.action)
        else:
            handler(batch, step)
        late = now_ms - step.due_ms
        step.state = STEP.transition(step.state, StepEvent.RUN)
        step.done_ms, step.late_ms = now_ms, late
        out.ran += 1
        out.max_late_ms = max(out.max_late_ms, late)
        out.late += late > 1000
    del prefetched
    return out


def due_soon(session: Session, until_ms: int) -> list[tuple[int, int]]:
    """(step id, due ms) of every pending step due before ``until_ms``, for the in-process waker."""
    return [
        (i, d)
        for i, d in session.execute(
            select(EscalationStep.id, EscalationStep.due_ms).where(
                STEP.where(EscalationStep.state, StepEvent.RUN), EscalationStep.due_ms < until_ms
            )
        )
    ]


def _escalate(batch: _Batch, step: EscalationStep) -> None:
    """Raise the alert to the step's level and page that level, if nobody has answered it yet."""
    session = batch.session
    alert = session.get(Alert, step.alert_id) if step.alert_id is not None else None
    # An acknowledged or resolved alert has had its steps cancelled; this guards a race with that.
    if alert is None or alert.state != AlertState.OPEN or alert.level >= step.level:
        return
    alert.level = step.level
    alert.version += 1
    session.add(AlertChange(alert_id=alert.id, at_ms=batch.now_ms, change="escalated"))
    roles = LADDER.get((alert.kind, step.level), ("supervisor",))
    page(session, alert, roles, step.level, batch.now_ms, batch.channels)
    batch.out.alerts_changed = True


def _dose_remind(batch: _Batch, step: EscalationStep) -> None:
    """At the due time: remind the client, unless the dispenser showed the dose already."""
    if step.dose_instance_id is None:
        return
    reminder = remind_if_needed(batch.session, step.dose_instance_id)
    if reminder is not None:
        batch.out.reminders.append(reminder)


def _dose_check(batch: _Batch, step: EscalationStep) -> None:
    """At due + grace: a dose still not taken is missed."""
    session = batch.session
    instance = session.get(DoseInstance, step.dose_instance_id) if step.dose_instance_id is not None else None
    if instance is not None:
        policy = policy_for(session, instance.client_id)
        batch.out.alerts_changed |= check_missed(
            session, instance.id, batch.now_ms, policy, batch.channels, batch.tz
        )


def _visit_check(batch: _Batch, step: EscalationStep) -> None:
    """At the visit's target time: alert when the visitor has not arrived."""
    session, now_ms = batch.session, batch.now_ms
    visit = session.get(Visit, step.visit_id) if step.visit_id is not None else None
    if visit is not None and visit.state == VisitState.UNDERWAY:
        policy = policy_for(session, visit.client_id)
        spec = overdue_alert(visit, now_ms)
        opened = open_alert(session, visit.client_id, None, spec, now_ms, now_ms, policy, batch.channels)
        batch.out.alerts_changed |= opened is not None


# What a due step does, by its action (``StepAction``; a plain string from the database finds it too).
_HANDLERS: Final[Mapping[str, Callable[[_Batch, EscalationStep], None]]] = {
    StepAction.ESCALATE: _escalate,
    StepAction.DOSE_REMIND: _dose_remind,
    StepAction.DOSE_CHECK: _dose_check,
    StepAction.VISIT_CHECK: _visit_check,
}
