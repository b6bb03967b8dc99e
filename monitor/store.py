"""The monitor's database adapter: device events become alerts, and alert actions are applied once.

Every change of an alert writes one ``alert_changes`` row in the same transaction, which is the feed the
consoles follow.
"""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from storage.models import Alert, AlertChange, Device, DeviceEvent

from .alerts import Action, AlertState, alert_for_event, transition

__all__ = ["AlertConflict", "AlertNotFound", "apply_action", "handle_pending_events"]


class AlertNotFound(LookupError):
    """No alert with that id."""


class AlertConflict(RuntimeError):
    """The alert kept changing under us; the caller may retry."""


def handle_pending_events(session: Session, now_ms: int, limit: int = 200) -> int:
    """Turn stored, not yet handled device events into alerts; return how many events were handled.

    On PostgreSQL several monitors may run: ``FOR UPDATE SKIP LOCKED`` gives each event to one of them.
    """
    query = (
        select(DeviceEvent, Device.client_id)
        .join(Device, Device.id == DeviceEvent.device_id)
        .where(DeviceEvent.handled_ms.is_(None))
        .order_by(DeviceEvent.id)
        .limit(limit)
    )
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True, of=DeviceEvent)
    rows = session.execute(query).all()
    for event, client_id in rows:
        spec = alert_for_event(event.kind, event.payload)
        if spec is not None:
            _raise_or_repeat(session, client_id, event, spec.kind, spec.priority, spec.detail, now_ms)
        event.handled_ms = now_ms
    return len(rows)


def _raise_or_repeat(
    session: Session, client_id: int, event: DeviceEvent, kind: str, priority: int, detail: str, now_ms: int
) -> None:
    existing = session.scalars(
        select(Alert).where(
            Alert.client_id == client_id, Alert.kind == kind, Alert.state != AlertState.RESOLVED
        )
    ).first()
    if existing is not None:
        # One open alert per client and kind: a repeat is counted, not shown twice.
        existing.count += 1
        existing.version += 1
        existing.last_event_ms = now_ms
        existing.priority = min(existing.priority, priority)
        session.flush()
        session.add(AlertChange(alert_id=existing.id, at_ms=now_ms, change="repeated"))
        return
    alert = Alert(
        client_id=client_id,
        device_id=event.device_id,
        kind=kind,
        priority=priority,
        state=AlertState.OPEN,
        detail=detail,
        count=1,
        version=1,
        opened_ms=now_ms,
        last_event_ms=now_ms,
        source_event_id=event.id,
    )
    session.add(alert)
    session.flush()
    session.add(AlertChange(alert_id=alert.id, at_ms=now_ms, change="opened"))


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
        else:
            values |= {"resolved_ms": now_ms, "resolved_by": actor_id, "outcome": outcome}
        result = session.execute(
            update(Alert)
            .where(Alert.id == alert_id, Alert.version == alert.version)
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        if result.rowcount == 1:  # type: ignore[attr-defined]
            session.add(
                AlertChange(alert_id=alert_id, at_ms=now_ms, change=new_state.value, actor_id=actor_id)
            )
            session.flush()
            refreshed = session.get(Alert, alert_id, populate_existing=True)
            assert refreshed is not None
            return refreshed
    raise AlertConflict(f"alert {alert_id} changed too often to apply {action.value}")
