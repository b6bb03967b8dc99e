"""The monitor's event adapter: stored device events become alerts, dose updates and schedule changes.

``decide_event`` (``rules.py``) says what an event means; this module applies those effects through the alert
store (``store.py``) and the medication planner (``doses.py``), one batch per transaction.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

from sqlalchemy import case, select
from sqlalchemy.orm import Session

from care.alert_store import PolicyBook, apply_action, open_alert, resolve_key
from care.alerts import Action, AlertState
from care.doses import adopt_schedule, apply_report
from care.policy import Policy
from care.rules import (
    AdoptSchedule,
    CancelAlarm,
    DoseReport,
    OpenAlert,
    ResolveAlerts,
    decide_event,
    open_key,
    stock_alert,
)
from storage.models import Alert, AlertChange, AlertNote, Device, DeviceEvent, MedicationDose

__all__ = ["Outcome", "handle_pending_events"]

_DEFAULT_TZ = ZoneInfo("Europe/Amsterdam")


@dataclass
class Outcome:
    """What a batch of work changed, for the caller to announce after the commit."""

    handled: int = 0
    alerts_changed: bool = False
    commands: list[tuple[str, str, dict[str, object]]] = field(
        default_factory=list
    )  # (device, command, args)


def handle_pending_events(
    session: Session,
    now_ms: int,
    channels: frozenset[str] = frozenset(),
    limit: int = 100,
    tz: ZoneInfo = _DEFAULT_TZ,
) -> Outcome:
    """Turn stored, not yet handled device events into alerts and dose updates.

    On PostgreSQL several monitors may run: ``FOR UPDATE SKIP LOCKED`` gives each event to one of them.
    """
    query = (
        select(DeviceEvent, Device)
        .join(Device, Device.id == DeviceEvent.device_id)
        .where(DeviceEvent.handled_ms.is_(None))
        # Alarms first: when ten thousand devices reconnect at once, their status reports must not hold
        # up an alarm pressed at the same moment.
        .order_by(case((DeviceEvent.kind == "alarm", 0), else_=1), DeviceEvent.id)
        .limit(limit)
    )
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True, of=DeviceEvent)
    out = Outcome()
    book = PolicyBook(session)
    rows = session.execute(query).all()
    open_keys = _open_keys(session, {device.client_id for _, device in rows}) if rows else set()
    for event, device in rows:
        policy = book.of(device.client_id)
        # The alert's clock starts when the event reached the service, not when the monitor saw it.
        at = event.received_ms
        for effect in decide_event(event.kind, event.payload, device.kind, event.reused_msg_id):
            if isinstance(effect, OpenAlert):
                alert = open_alert(
                    session,
                    device.client_id,
                    device.id,
                    effect,
                    at,
                    now_ms,
                    policy,
                    channels,
                    source_event_id=event.id,
                )
                if alert is not None and alert.open_key is not None:
                    open_keys.add(alert.open_key)  # a later event of this batch may resolve it
                out.alerts_changed |= alert is not None
            elif isinstance(effect, ResolveAlerts):
                # Most "back online" reports resolve nothing: ask the database only when there is an alert.
                key = open_key(effect.kind, device.client_id, device.id, None)
                if key in open_keys:
                    out.alerts_changed |= resolve_key(session, key, effect.outcome, effect.note, now_ms)
                    open_keys.discard(key)
            elif isinstance(effect, CancelAlarm):
                out.alerts_changed |= _cancel_alarm(session, device, effect.alarm_msg_id, at, now_ms, policy)
            elif isinstance(effect, DoseReport):
                out.alerts_changed |= apply_report(session, device, effect, at, now_ms, policy, channels, tz)
            elif isinstance(effect, AdoptSchedule):
                adopt_schedule(session, device, effect, now_ms, tz, policy.dose_grace_s * 1000)
        if event.kind == "dispenser":
            out.alerts_changed |= _stock(session, device, event.payload, at, now_ms, policy, channels)
        elif event.kind == "cmdack":
            # The device confirms (or refuses) a command, e.g. a new medication schedule.
            from care.commands import apply_command_ack

            body = json.loads(event.payload)
            apply_command_ack(session, event.device_id, body["cmd_id"], body["result"], event.received_ms)
        event.handled_ms = now_ms
        out.handled += 1
    return out


def _open_keys(session: Session, client_ids: set[int]) -> set[str]:
    """The dedup keys of these clients' alerts that still count repeats: one query for a whole batch."""
    return set(
        session.scalars(
            select(Alert.open_key).where(Alert.client_id.in_(client_ids), Alert.open_key.is_not(None))
        )
    )


def _cancel_alarm(
    session: Session, device: Device, alarm_msg_id: str, at_ms: int, now_ms: int, policy: Policy
) -> bool:
    """The client pressed cancel for one press: close its alarm only if that press is all the alarm holds.

    A cancel never closes presses that came after the cancelled one (a fall after a pendant press), and a
    cancel of a press that was counted on an earlier press's alarm leaves a note there.
    """
    pressed_at = session.scalar(
        select(DeviceEvent.received_ms).where(
            DeviceEvent.device_id == device.id,
            DeviceEvent.msg_id == alarm_msg_id,
            DeviceEvent.kind == "alarm",
        )
    )
    if pressed_at is None:
        return False
    row = session.scalars(
        select(Alert)
        .where(
            Alert.client_id == device.client_id,
            Alert.kind == "alarm",
            Alert.opened_ms <= pressed_at,
            Alert.last_event_ms >= pressed_at,
        )
        .order_by(Alert.opened_ms.desc(), Alert.id.desc())
        .limit(1)
    ).first()
    if row is None or row.state == AlertState.RESOLVED:
        return False
    seconds = (at_ms - pressed_at) / 1000
    if row.state == AlertState.OPEN and row.count == 1 and seconds <= policy.pre_alarm_window_s:
        apply_action(
            session,
            alert_id=row.id,
            action=Action.CANCEL,
            actor_id=None,
            now_ms=now_ms,
            outcome="cancelled_by_client",
        )
        text = f"Cancelled by the client on the device after {seconds:.0f} s"
    elif row.count > 1:
        text = (
            f"The client cancelled one of the {row.count} presses after {seconds:.0f} s: "
            "the alarm stays open for the others"
        )
    else:
        text = f"The client pressed cancel after {seconds:.0f} s (outside the pre-alarm window): still open"
    session.add(AlertNote(alert_id=row.id, user_id=None, at_ms=now_ms, text=text))
    row.version += 1
    session.add(AlertChange(alert_id=row.id, at_ms=now_ms, change="note"))
    return True


def _stock(
    session: Session,
    device: Device,
    payload: str,
    at_ms: int,
    now_ms: int,
    policy: Policy,
    channels: frozenset[str],
) -> bool:
    body = json.loads(payload)
    if body.get("event") != "stock_low":
        return False
    per_day = len(
        list(session.scalars(select(MedicationDose.id).where(MedicationDose.client_id == device.client_id)))
    )
    spec = stock_alert(int(body["doses_left"]), per_day or 1, policy)
    return (
        spec is not None
        and open_alert(session, device.client_id, device.id, spec, at_ms, now_ms, policy, channels)
        is not None
    )
