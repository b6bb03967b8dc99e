"""Timers that survive anything: pending steps live in ``escalation_steps``; due ones are claimed and run.

The database is the source of truth; the in-process scheduler only decides *when* to look. A step is
claimed and run inside one transaction (on PostgreSQL with ``FOR UPDATE SKIP LOCKED``, so with several
monitors each step runs once), and is marked done in that same transaction — a monitor killed mid-step
leaves it pending, and the next monitor to look runs it, late but once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

from sqlalchemy import case, select
from sqlalchemy.orm import Session

from storage.models import Alert, AlertChange, DoseInstance, EscalationStep, Visit

from .alert_store import open_alert, policy_for
from .alerts import AlertState
from .doses import check_missed, remind_if_needed
from .roster import page
from .rules import LADDER, OpenAlert

__all__ = ["StepRun", "due_soon", "run_due_steps"]

_DEFAULT_TZ = ZoneInfo("Europe/Amsterdam")


@dataclass
class StepRun:
    ran: int = 0
    late: int = 0  # steps that ran more than a second after their due time
    max_late_ms: int = 0
    alerts_changed: bool = False
    reminders: list[tuple[str, str]] = field(default_factory=list)  # (device id, dose id)


# Which due steps go first when many are due at once (everybody's 08:00 pills): an alarm's escalation must
# never wait behind a hundred thousand dose reminders.
_URGENCY = case(
    (EscalationStep.action == "escalate", 0),
    (EscalationStep.action == "visit_check", 1),
    (EscalationStep.action == "dose_check", 2),
    else_=3,
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
        .where(EscalationStep.state == "pending", EscalationStep.due_ms <= now_ms)
        .order_by(_URGENCY, EscalationStep.due_ms, EscalationStep.id)
        .limit(limit)
    )
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    out = StepRun()
    steps = session.scalars(query).all()
    # Load the batch's dose instances in one query; the identity map then serves each step's lookup (it
    # holds objects weakly, so the list is kept alive for the loop).
    dose_ids = [_subject_id(s) for s in steps if s.action in ("dose_remind", "dose_check")]
    prefetched = (
        list(session.scalars(select(DoseInstance).where(DoseInstance.id.in_(dose_ids)))) if dose_ids else []
    )
    for step in steps:
        _run(session, step, now_ms, channels, out, tz)
        late = now_ms - step.due_ms
        step.state, step.done_ms, step.late_ms = "done", now_ms, late
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
                EscalationStep.state == "pending", EscalationStep.due_ms < until_ms
            )
        )
    ]


def _run(
    session: Session, step: EscalationStep, now_ms: int, channels: frozenset[str], out: StepRun, tz: ZoneInfo
) -> None:
    if step.action == "escalate":
        alert = session.get(Alert, step.alert_id) if step.alert_id is not None else None
        # An acknowledged or resolved alert has had its steps cancelled; this guards a race with that.
        if alert is None or alert.state != AlertState.OPEN or alert.level >= step.level:
            return
        alert.level = step.level
        alert.version += 1
        session.add(AlertChange(alert_id=alert.id, at_ms=now_ms, change="escalated"))
        page(
            session,
            alert,
            LADDER.get((alert.kind, step.level), ("supervisor",)),
            step.level,
            now_ms,
            channels,
        )
        out.alerts_changed = True
    elif step.action == "dose_remind":
        reminder = remind_if_needed(session, _subject_id(step))
        if reminder is not None:
            out.reminders.append(reminder)
    elif step.action == "dose_check":
        instance = session.get(DoseInstance, _subject_id(step))
        if instance is not None:
            out.alerts_changed |= check_missed(
                session, instance.id, now_ms, policy_for(session, instance.client_id), channels, tz
            )
    elif step.action == "visit_check":
        visit = session.get(Visit, _subject_id(step))
        if visit is not None and visit.state == "underway":
            policy = policy_for(session, visit.client_id)
            minutes = (now_ms - visit.sent_ms) // 60_000
            spec = OpenAlert(
                "visit_overdue",
                2,
                f"{visit.visitor} not yet arrived after {minutes} min",
                subject=f"visit:{visit.id}",
            )
            out.alerts_changed |= (
                open_alert(session, visit.client_id, None, spec, now_ms, now_ms, policy, channels) is not None
            )


def _subject_id(step: EscalationStep) -> int:
    """The row id in a subject like ``dose:17`` or ``visit:3``."""
    return int((step.subject or "x:0").split(":", 1)[1])
