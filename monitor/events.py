"""The monitor's event adapter: stored device events become alerts, dose updates and schedule changes.

Each stored event is read back once into its typed message (``protocol.stored.decode_stored``);
``care.rules.decide_event`` says everything it means, as effects; this module only applies them, through the
alert store, the medication planner and the command record, one batch per transaction. It decides nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final
from zoneinfo import ZoneInfo

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from care.alert_store import PolicyBook, apply_action, open_alert, resolve_key
from care.alerts import Action, AlertState
from care.commands import apply_command_ack
from care.doses import adopt_schedule, apply_report
from care.policy import Policy
from care.rules import (
    AdoptSchedule,
    CancelAlarm,
    DoseReport,
    Effect,
    EventContext,
    OpenAlert,
    RecordCommandAck,
    ResolveAlerts,
    decide_event,
    open_key,
)
from protocol.fields import ProtocolError
from protocol.stored import StoredMessage, decode_stored
from protocol.v1 import DispenserEvent
from storage.models import Alert, AlertChange, AlertNote, Device, DeviceEvent, MedicationDose

__all__ = ["Outcome", "handle_pending_events"]

log = logging.getLogger(__name__)

_DEFAULT_TZ = ZoneInfo("Europe/Amsterdam")


@dataclass
class Outcome:
    """What a batch of work changed, for the caller to announce after the commit."""

    handled: int = 0
    alerts_changed: bool = False


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
        work = _Work(session, event, device, book.of(device.client_id), now_ms, channels, tz, open_keys)
        message = _read(event)
        if message is not None:
            for effect in decide_event(message, _context(work, message)):
                out.alerts_changed |= _APPLY[type(effect)](work, effect)
        event.handled_ms = now_ms
        out.handled += 1
    return out


@dataclass(frozen=True, slots=True)
class _Work:
    """One stored event being applied: its device, its client's policy, and the batch it is part of."""

    session: Session
    event: DeviceEvent
    device: Device
    policy: Policy
    now_ms: int
    channels: frozenset[str]
    tz: ZoneInfo
    open_keys: set[str]  # the batch's dedup keys that still count repeats (kept up to date)

    @property
    def at_ms(self) -> int:
        """The alert's clock starts when the event reached the service, not when the monitor saw it."""
        return self.event.received_ms


def _read(event: DeviceEvent) -> StoredMessage | None:
    """The typed message of a stored event; None (logged) for a row the gateway could not have written."""
    try:
        return decode_stored(
            event.kind, event.payload, device_id=event.device_id, msg_id=event.msg_id, ts=event.device_ts_ms
        )
    except ProtocolError as exc:
        log.error(
            "monitor: stored event %d (%s) is not a protocol message, ignored: %s", event.id, event.kind, exc
        )
        return None


def _context(work: _Work, message: StoredMessage) -> EventContext:
    """What ``decide_event`` needs besides the message: only a dispenser's report needs the schedule."""
    per_day = 0
    if isinstance(message, DispenserEvent):
        per_day = (
            work.session.scalar(
                select(func.count(MedicationDose.id)).where(MedicationDose.client_id == work.device.client_id)
            )
            or 0
        )
    return EventContext(work.device.kind, work.event.reused_msg_id, per_day, work.policy)


def _open(work: _Work, effect: OpenAlert) -> bool:
    alert = open_alert(
        work.session,
        work.device.client_id,
        work.device.id,
        effect,
        work.at_ms,
        work.now_ms,
        work.policy,
        work.channels,
        source_event_id=work.event.id,
    )
    if alert is not None and alert.open_key is not None:
        work.open_keys.add(alert.open_key)  # a later event of this batch may resolve it
    return alert is not None


def _resolve(work: _Work, effect: ResolveAlerts) -> bool:
    # Most "back online" reports resolve nothing: ask the database only when there is an alert.
    key = open_key(effect.kind, work.device.client_id, work.device.id, None)
    if key not in work.open_keys:
        return False
    work.open_keys.discard(key)
    return resolve_key(work.session, key, effect.outcome, effect.note, work.now_ms)


def _cancel(work: _Work, effect: CancelAlarm) -> bool:
    return _cancel_alarm(work.session, work.device, effect.alarm_msg_id, work.at_ms, work.now_ms, work.policy)


def _dose(work: _Work, effect: DoseReport) -> bool:
    return apply_report(
        work.session, work.device, effect, work.at_ms, work.now_ms, work.policy, work.channels, work.tz
    )


def _adopt(work: _Work, effect: AdoptSchedule) -> bool:
    adopt_schedule(work.session, work.device, effect, work.now_ms, work.tz, work.policy.dose_grace_s * 1000)
    return False


def _command_ack(work: _Work, effect: RecordCommandAck) -> bool:
    apply_command_ack(work.session, work.device.id, effect.cmd_id, effect.result, work.at_ms)
    return False


# How each effect is applied; each returns True when an alert changed (the console is told after the commit).
_APPLY: Final[dict[type[Effect], Callable[[_Work, Any], bool]]] = {
    OpenAlert: _open,
    ResolveAlerts: _resolve,
    CancelAlarm: _cancel,
    DoseReport: _dose,
    AdoptSchedule: _adopt,
    RecordCommandAck: _command_ack,
}


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
