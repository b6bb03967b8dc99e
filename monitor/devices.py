"""Silent devices, devices that never connected, low batteries: a periodic sweep over the device rows.

The gateway keeps liveness in memory and writes it in batches; the Last Will makes a device offline at once
through a status event. A device that goes silent without a Last Will (power cut, frozen firmware) is found
here, after ``missed_heartbeats`` intervals.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, and_, func, or_, select
from sqlalchemy.orm import Session

from care.alert_store import PolicyBook, active_window, open_alert, resolve_key
from care.policy import Policy
from care.rules import OpenAlert, offline_priority, open_key
from storage.models import Alert, Device

__all__ = ["DeviceVerdict", "judge_device", "sweep_devices"]


@dataclass(frozen=True, slots=True)
class DeviceVerdict:
    silent: bool
    never_connected: bool
    battery_low: bool
    battery_ok: bool


def judge_device(
    *,
    last_seen_ms: int | None,
    online: bool | None,
    interval_s: int | None,
    created_ms: int,
    battery: int | None,
    now_ms: int,
    policy: Policy,
) -> DeviceVerdict:
    """Judge one device at ``now_ms`` (pure)."""
    interval_ms = (interval_s or policy.default_heartbeat_s) * 1000
    silent = (
        last_seen_ms is not None
        and online is not False
        and now_ms - last_seen_ms > (policy.missed_heartbeats * interval_ms)
    )
    never = last_seen_ms is None and now_ms - created_ms > policy.never_connected_after_s * 1000
    low = battery is not None and battery <= policy.battery_low_pct
    # A margin above the threshold, so a battery hovering around it does not open and close alerts.
    ok = battery is not None and battery > policy.battery_low_pct + 10
    return DeviceVerdict(silent, never, low, ok)


def sweep_devices(session: Session, now_ms: int, channels: frozenset[str]) -> bool:
    """Mark silent devices offline and open or resolve each device's own alerts; True when one changed."""
    changed = False
    book = PolicyBook(session)
    open_keys = set(session.scalars(select(Alert.open_key).where(Alert.open_key.is_not(None))))
    device_alerts: dict[tuple[str, str], int] = {
        (str(device_id), kind): last_ms
        for device_id, kind, last_ms in session.execute(
            select(Alert.device_id, Alert.kind, Alert.last_event_ms).where(
                Alert.kind.in_(("battery_low", "offline")),
                Alert.open_key.is_not(None),
                Alert.device_id.is_not(None),
            )
        )
    }
    devices = list(session.scalars(_candidates(book, {d for d, _ in device_alerts}, now_ms)))
    closed = _last_closed(session, [d.id for d in devices])
    for device in devices:
        policy = book.of(device.client_id)
        verdict = judge_device(
            last_seen_ms=device.last_seen_ms,
            online=device.online,
            interval_s=device.heartbeat_interval_s,
            created_ms=device.created_ms,
            battery=device.battery,
            now_ms=now_ms,
            policy=policy,
        )
        offline_key = open_key("offline", device.client_id, device.id, None)
        battery_key = open_key("battery_low", device.client_id, device.id, None)
        if verdict.silent:
            device.online = False
            device.online_changed_ms = now_ms
            assert device.last_seen_ms is not None
            minutes = (now_ms - device.last_seen_ms) // 60_000
            spec = OpenAlert(
                "offline",
                offline_priority(device.kind),
                f"{_name(device)} silent for {minutes} min (no heartbeat, no Last Will)",
            )
            changed |= _raise(session, device, spec, now_ms, policy, channels)
        elif (
            verdict.never_connected
            and offline_key not in open_keys
            and not _closed_within(closed, device, "offline", now_ms, policy.never_connected_after_s * 1000)
        ):
            spec = OpenAlert("offline", offline_priority(device.kind), f"{_name(device)} never connected")
            changed |= _raise(session, device, spec, now_ms, policy, channels)
        elif device.online is False and offline_key not in open_keys:
            last_closed = closed.get((device.id, "offline"))
            changed |= _still_offline(session, device, policy, now_ms, channels, last_closed)
        elif (
            offline_key in open_keys
            and device.online is True
            and (device.last_seen_ms or 0) > device_alerts.get((device.id, "offline"), now_ms)
        ):
            # Heard from again (by heartbeats alone, no status report) since the alert: the device is back.
            changed |= resolve_key(
                session, offline_key, "back_online", f"{_name(device)} is heard from again", now_ms
            )
        if (
            verdict.battery_low
            and battery_key not in open_keys
            and not _closed_within(closed, device, "battery_low", now_ms, _BATTERY_REMINDER_MS)
        ):
            spec = OpenAlert("battery_low", 4, f"Battery low ({device.battery}%) on {_name(device)}")
            changed |= _raise(session, device, spec, now_ms, policy, channels)
        elif verdict.battery_ok and battery_key in open_keys:
            changed |= resolve_key(
                session, battery_key, "battery_ok", f"Battery back at {device.battery}%", now_ms
            )
    return changed


def _raise(
    session: Session, device: Device, spec: OpenAlert, now_ms: int, policy: Policy, channels: frozenset[str]
) -> bool:
    """Open (or count a repeat on) one of the device's own alerts; True unless a window held it back."""
    return (
        open_alert(session, device.client_id, device.id, spec, now_ms, now_ms, policy, channels) is not None
    )


def _still_offline(
    session: Session,
    device: Device,
    policy: Policy,
    now_ms: int,
    channels: frozenset[str],
    last_closed: int | None,
) -> bool:
    """A device still offline with no open alert (a person closed it, or it was held back by a window that
    ended) is raised again once it has been offline a whole detection time since then."""
    detect_ms = policy.missed_heartbeats * (device.heartbeat_interval_s or policy.default_heartbeat_s) * 1000
    since = max(device.online_changed_ms or device.created_ms, last_closed or 0)
    if now_ms - since <= detect_ms or active_window(session, device.client_id, device.id, now_ms):
        return False
    minutes = (now_ms - (device.online_changed_ms or since)) // 60_000
    spec = OpenAlert(
        "offline", offline_priority(device.kind), f"{_name(device)} still offline after {minutes} min"
    )
    return _raise(session, device, spec, now_ms, policy, channels)


# A battery still low after a person closed its alert (the client will charge it tomorrow) is raised again
# after this long, not at the next sweep.
_BATTERY_REMINDER_MS = 12 * 3600 * 1000


def _last_closed(session: Session, device_ids: list[str]) -> dict[tuple[str, str], int]:
    """(device, kind) -> when its last offline or battery alert was closed: one query for a whole sweep."""
    if not device_ids:
        return {}
    return {
        (str(device_id), kind): resolved
        for device_id, kind, resolved in session.execute(
            select(Alert.device_id, Alert.kind, func.max(Alert.resolved_ms))
            .where(
                Alert.device_id.in_(device_ids),
                Alert.kind.in_(("offline", "battery_low")),
                Alert.resolved_ms.is_not(None),
            )
            .group_by(Alert.device_id, Alert.kind)
        )
        if resolved is not None
    }


def _closed_within(
    closed: dict[tuple[str, str], int], device: Device, kind: str, now_ms: int, within_ms: int
) -> bool:
    """Was an alert of ``kind`` about this device closed less than ``within_ms`` ago?"""
    last = closed.get((device.id, kind))
    return last is not None and now_ms - last < within_ms


def _name(device: Device) -> str:
    return f"{device.label} ({device.id})" if device.label else f"Device {device.id}"


def _candidates(book: PolicyBook, device_alerts: set[str], now_ms: int) -> Select[Any]:
    """Only the devices that may need attention, chosen by the database: at 10,000 devices the sweep must
    not walk every row while it holds SQLite's write lock. Clients with a policy of their own are judged
    one by one (their thresholds may differ from the organisation's)."""
    org = book.of(None)
    c = Device.__table__.c
    interval_ms = func.coalesce(c.heartbeat_interval_s, org.default_heartbeat_s) * 1000
    return select(Device).where(
        Device.decommissioned_ms.is_(None),  # a device taken out of service is never missed
        Device.kind != "probe",  # the service's own probe device sends alarms only, no heartbeats
        or_(
            Device.client_id.in_(book.clients_with_overrides or {-1}),
            and_(
                c.last_seen_ms.is_not(None),
                or_(c.online.is_(None), c.online.is_(True)),
                c.last_seen_ms + org.missed_heartbeats * interval_ms < now_ms,
            ),
            and_(c.last_seen_ms.is_(None), c.created_ms < now_ms - org.never_connected_after_s * 1000),
            c.online.is_(False),  # offline devices are few; each is checked for an alert of its own
            c.battery <= org.battery_low_pct,
            Device.id.in_(device_alerts or {"~none"}),
        ),
    )
