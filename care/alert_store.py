"""The monitor's database adapter for alerts: open (once per dedup key), resolve, act on them.

Every change of an alert writes one ``alert_changes`` row in the same transaction, which is the feed the
consoles follow. Opening an alert schedules its escalation steps in that transaction too; acknowledging or
resolving it cancels every pending step and notification of it — in the same transaction, so an
acknowledgement is final for pending notifications.
"""

from __future__ import annotations

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from storage.models import (
    Alert,
    AlertChange,
    AlertNote,
    EscalationStep,
    MaintenanceWindow,
    Notification,
    Suppression,
)
from storage.models import (
    Policy as PolicyRow,
)

from .alerts import Action, AlertState, IllegalTransition, may_undo, transition
from .errors import CareError
from .lifecycles import NOTIFICATION, NotificationEvent, StepAction
from .policy import Policy, merge_policy
from .roster import page
from .rules import (
    LADDER,
    OpenAlert,
    open_key,
    quiet_in_window,
    steps_for,
)
from .step_store import add_step, cancel_steps

__all__ = [
    "AlertConflict",
    "AlertNotFound",
    "PolicyBook",
    "UndoRefused",
    "active_window",
    "add_note",
    "apply_action",
    "assign",
    "open_alert",
    "policy_for",
    "resolve_alert",
    "resolve_device_alerts",
    "resolve_key",
    "undo_resolve",
]


class AlertNotFound(CareError, LookupError):
    """No alert with that id."""


class AlertConflict(CareError, RuntimeError):
    """The alert kept changing under us; the caller may retry."""


class UndoRefused(IllegalTransition):
    """A resolve that may not be undone (another nurse's, or too late): a conflict, like any refused move."""

    def __init__(self, why: str) -> None:
        CareError.__init__(self, f"cannot undo: {why}")
        self.state = AlertState.RESOLVED
        self.action = Action.UNDO


def policy_for(session: Session, client_id: int | None) -> Policy:
    """The policy of a client: its own overrides over the organisation's over the defaults."""
    return PolicyBook(session).of(client_id)


class PolicyBook:
    """Every stored policy, read once (a batch of thousands of events must not read it thousands of times)."""

    def __init__(self, session: Session) -> None:
        self.rows = {row.client_id: row.settings for row in session.scalars(select(PolicyRow))}
        self._merged: dict[int | None, Policy] = {}

    def of(self, client_id: int | None) -> Policy:
        if client_id not in self._merged:
            # Stored policies were validated when they were entered; stored test timings may be shorter.
            own = self.rows.get(client_id) if client_id is not None else None
            self._merged[client_id] = merge_policy(self.rows.get(None), own, validate=False)
        return self._merged[client_id]

    @property
    def clients_with_overrides(self) -> set[int]:
        return {c for c in self.rows if c is not None}


def open_alert(
    session: Session,
    client_id: int,
    device_id: str | None,
    spec: OpenAlert,
    at_ms: int,
    now_ms: int,
    policy: Policy,
    channels: frozenset[str],
    source_event_id: int | None = None,
) -> Alert | None:
    """Open an alert, or count a repeat on the open one with the same key; None when a window quieted it.

    A maintenance window quiets device-state and dose alerts (recorded as a suppression, shown on the
    timeline), never an alarm. An alarm pressed while an earlier one of the client is in progress opens a
    new alert linked to that one (``incident_alert_id``), with escalation timers from the new press.
    """
    window = active_window(session, client_id, device_id, now_ms)
    if window is not None and quiet_in_window(spec):
        _suppress(session, window, client_id, device_id, spec, now_ms)
        return None
    key = open_key(spec.kind, client_id, device_id, spec.subject)
    existing = session.scalars(select(Alert).where(Alert.open_key == key)).first()
    if existing is not None:
        _count_repeat(session, existing, spec, at_ms, now_ms)
        return existing
    alert = Alert(
        client_id=client_id,
        device_id=device_id,
        kind=spec.kind,
        priority=spec.priority,
        state=AlertState.OPEN,
        detail=spec.detail,
        count=1,
        version=1,
        level=0,
        opened_ms=at_ms,
        last_event_ms=at_ms,
        source_event_id=source_event_id,
        subject=spec.subject,
        open_key=key,
        incident_alert_id=_running_alarm(session, client_id) if spec.kind == "alarm" else None,
    )
    session.add(alert)
    session.flush()
    session.add(AlertChange(alert_id=alert.id, at_ms=now_ms, change="opened"))
    if window is not None:
        session.add(
            AlertNote(
                alert_id=alert.id,
                user_id=None,
                at_ms=now_ms,
                text=f"Raised during a maintenance window ({window.reason}): alarms are never held back",
            )
        )
    for plan in steps_for(spec.kind, spec.priority, at_ms, policy):
        add_step(
            session,
            action=StepAction(plan.action),
            due_ms=plan.due_ms,
            now_ms=now_ms,
            level=plan.level,
            alert_id=alert.id,
        )
    if (spec.kind, 0) in LADDER:
        page(session, alert, LADDER[(spec.kind, 0)], 0, now_ms, channels)
    return alert


def _suppress(
    session: Session,
    window: MaintenanceWindow,
    client_id: int,
    device_id: str | None,
    spec: OpenAlert,
    now_ms: int,
) -> None:
    """Record what a window held back — once per window, device and kind: a sweep finding the same thing
    every 10 s adds nothing."""
    seen = session.scalar(
        select(Suppression.id).where(
            Suppression.window_id == window.id,
            Suppression.device_id.is_(None) if device_id is None else Suppression.device_id == device_id,
            Suppression.kind == spec.kind,
            Suppression.detail == spec.detail,
        )
    )
    if seen is None:
        session.add(
            Suppression(
                window_id=window.id,
                client_id=client_id,
                device_id=device_id,
                kind=spec.kind,
                detail=spec.detail,
                at_ms=now_ms,
            )
        )


def _count_repeat(session: Session, alert: Alert, spec: OpenAlert, at_ms: int, now_ms: int) -> None:
    """Count a repeat of the problem on its open alert (a press again is noted on an alarm)."""
    alert.count += 1
    alert.version += 1
    alert.last_event_ms = at_ms
    alert.priority = min(alert.priority, spec.priority)
    if spec.kind == "alarm":
        alert.detail = spec.detail  # the console shows the latest alarm kind (a fall after a press)
    session.flush()
    session.add(AlertChange(alert_id=alert.id, at_ms=now_ms, change="repeated"))
    if spec.kind == "alarm":
        session.add(
            AlertNote(alert_id=alert.id, user_id=None, at_ms=now_ms, text=f"Pressed again: {spec.detail}")
        )


def _running_alarm(session: Session, client_id: int) -> int | None:
    """The client's alarm a nurse is handling now (the newest), which a new press belongs to."""
    return session.scalar(
        select(Alert.id)
        .where(Alert.client_id == client_id, Alert.kind == "alarm", Alert.state == AlertState.ACKNOWLEDGED)
        .order_by(Alert.opened_ms.desc(), Alert.id.desc())
        .limit(1)
    )


def resolve_key(session: Session, key: str, outcome: str, note: str, now_ms: int) -> bool:
    """Resolve the alert counting repeats under ``key`` (the problem went away by itself)."""
    alert_id = session.scalar(select(Alert.id).where(Alert.open_key == key))
    if alert_id is None:
        return False
    apply_action(
        session, alert_id=alert_id, action=Action.RESOLVE, actor_id=None, now_ms=now_ms, outcome=outcome
    )
    session.add(AlertNote(alert_id=alert_id, user_id=None, at_ms=now_ms, text=note))
    return True


def resolve_device_alerts(session: Session, device_id: str, now_ms: int) -> int:
    """A device taken out of service: its own state alerts (offline, battery, ...) are closed; its
    alarms are not — a person closes those. Return how many were closed."""
    ids = list(
        session.scalars(
            select(Alert.id).where(
                Alert.device_id == device_id, Alert.state != AlertState.RESOLVED, Alert.kind != "alarm"
            )
        )
    )
    for alert_id in ids:
        apply_action(
            session,
            alert_id=alert_id,
            action=Action.RESOLVE,
            actor_id=None,
            now_ms=now_ms,
            outcome="device_removed",
        )
        session.add(
            AlertNote(
                alert_id=alert_id, user_id=None, at_ms=now_ms, text="The device was taken out of service"
            )
        )
    return len(ids)


def apply_action(
    session: Session,
    *,
    alert_id: int,
    action: Action,
    actor_id: int | None,
    now_ms: int,
    outcome: str | None = None,
) -> Alert:
    """Apply ``action`` to an alert exactly once, whatever another console does at the same moment.

    The update is conditional on the version read; when another console changed the alert in between, the
    action is checked again against the new state (so acknowledge-vs-resolve has one defined outcome: the
    first committed wins, and the second is refused with IllegalTransition if it no longer applies).
    """
    for _attempt in range(5):
        alert = session.get(Alert, alert_id, populate_existing=True)
        if alert is None:
            raise AlertNotFound(alert_id)
        new_state = transition(AlertState(alert.state), action)
        values: dict[str, object] = {"state": new_state.value, "version": alert.version + 1}
        if action is Action.ACKNOWLEDGE:
            values |= {"acknowledged_ms": now_ms, "acknowledged_by": actor_id}
            if alert.kind == "alarm":
                values["open_key"] = None  # a press after someone took the alarm is news again
        elif action is Action.UNDO:
            values |= _undo_values(alert, actor_id, now_ms)
        else:
            values |= {"resolved_ms": now_ms, "resolved_by": actor_id, "outcome": outcome, "open_key": None}
        result = session.execute(
            update(Alert)
            .where(Alert.id == alert_id, Alert.version == alert.version)
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        if result.rowcount == 1:  # type: ignore[attr-defined]
            _cancel_pending(session, alert_id, now_ms)
            change = "undone" if action is Action.UNDO else new_state.value
            session.add(AlertChange(alert_id=alert_id, at_ms=now_ms, change=change, actor_id=actor_id))
            session.flush()
            refreshed = session.get(Alert, alert_id, populate_existing=True)
            assert refreshed is not None
            return refreshed
    raise AlertConflict(f"alert {alert_id} changed too often to apply {action.value}")


def _undo_values(alert: Alert, actor_id: int | None, now_ms: int) -> dict[str, object]:
    """An undone resolve: back in progress with the nurse who closed it (she took it when she closed it, if
    nobody had); the outcome is cleared, the open key stays free (a new press is news)."""
    if actor_id is None:
        raise UndoRefused("no nurse undoes it")
    why = may_undo(alert.resolved_ms, alert.resolved_by, actor_id, now_ms)
    if why is not None:
        raise UndoRefused(why)
    values: dict[str, object] = {"resolved_ms": None, "resolved_by": None, "outcome": None}
    if alert.acknowledged_ms is None:
        values |= {"acknowledged_ms": alert.resolved_ms, "acknowledged_by": actor_id}
    return values


def resolve_alert(
    session: Session, *, alert_id: int, actor_id: int, now_ms: int, outcome: str, note: str
) -> Alert:
    """A nurse closes an alert with its outcome and her closing note (one transaction: no close without
    its note). The note is an ordinary alert note, shown on the timeline and the handover."""
    if not note.strip():
        raise ValueError("a closing note is required")
    alert = apply_action(
        session, alert_id=alert_id, action=Action.RESOLVE, actor_id=actor_id, now_ms=now_ms, outcome=outcome
    )
    session.add(AlertNote(alert_id=alert_id, user_id=actor_id, at_ms=now_ms, text=note.strip()))
    session.flush()
    return alert


def undo_resolve(session: Session, *, alert_id: int, actor_id: int, now_ms: int) -> Alert:
    """Take a resolve back (UndoRefused: not hers, or too late; IllegalTransition: not resolved): the alert
    is in progress again, its closing note stays on the record."""
    return apply_action(session, alert_id=alert_id, action=Action.UNDO, actor_id=actor_id, now_ms=now_ms)


def assign(session: Session, *, alert_id: int, user_id: int | None, actor_id: int, now_ms: int) -> Alert:
    """Assign an alert that is not resolved to a person (or nobody)."""
    alert = session.get(Alert, alert_id, populate_existing=True)
    if alert is None:
        raise AlertNotFound(alert_id)
    if alert.state == AlertState.RESOLVED:
        raise IllegalTransition(AlertState.RESOLVED, Action.ACKNOWLEDGE)
    alert.assigned_to = user_id
    alert.version += 1
    session.add(AlertChange(alert_id=alert_id, at_ms=now_ms, change="assigned", actor_id=actor_id))
    session.flush()
    return alert


def add_note(session: Session, *, alert_id: int, user_id: int | None, text: str, now_ms: int) -> AlertNote:
    alert = session.get(Alert, alert_id)
    if alert is None:
        raise AlertNotFound(alert_id)
    note = AlertNote(alert_id=alert_id, user_id=user_id, at_ms=now_ms, text=text)
    session.add(note)
    alert.version += 1
    session.add(AlertChange(alert_id=alert_id, at_ms=now_ms, change="note", actor_id=user_id))
    session.flush()
    return note


def _cancel_pending(session: Session, alert_id: int, now_ms: int) -> None:
    """Cancel every pending escalation step and notification of an alert (in the caller's transaction)."""
    cancel_steps(session, EscalationStep.alert_id == alert_id, now_ms)
    session.execute(
        update(Notification)
        .where(
            Notification.alert_id == alert_id,
            NOTIFICATION.where(Notification.state, NotificationEvent.CANCEL),
        )
        .values(state=NOTIFICATION.target(NotificationEvent.CANCEL))
        .execution_options(synchronize_session=False)
    )


def active_window(
    session: Session, client_id: int, device_id: str | None, now_ms: int
) -> MaintenanceWindow | None:
    scope = MaintenanceWindow.client_id == client_id
    if device_id is not None:
        scope = or_(scope, MaintenanceWindow.device_id == device_id)
    return session.scalars(
        select(MaintenanceWindow).where(
            scope, MaintenanceWindow.starts_ms <= now_ms, MaintenanceWindow.ends_ms > now_ms
        )
    ).first()
