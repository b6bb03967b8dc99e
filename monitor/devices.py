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

from storage.models import Alert, Device

from .policy import Policy
from .rules import OpenAlert, offline_priority
from .store import PolicyBook, open_alert, resolve_kind

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
    """Mark silent devices offline and open or resolve device alerts; True when an alert changed."""

    changed = False
    book = PolicyBook(session)
    open_kinds = {
        (c, k)
        for c, k in session.execute(select(Alert.client_id, Alert.kind).where(Alert.state != "resolved"))
    }
    for device in session.scalars(_candidates(book, open_kinds, now_ms)):
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
        if verdict.silent:
            device.online = False
            device.online_changed_ms = now_ms
            assert device.last_seen_ms is not None
            minutes = (now_ms - device.last_seen_ms) // 60_000
            spec = OpenAlert(
                "offline",
                offline_priority(device.kind),
                f"Device silent for {minutes} min (no heartbeat, no Last Will)",
            )
            changed |= (
                open_alert(session, device.client_id, device.id, spec, now_ms, now_ms, policy, channels)
                is not None
            )
        elif verdict.never_connected and (device.client_id, "offline") not in open_kinds:
            spec = OpenAlert("offline", offline_priority(device.kind), f"Device {device.id} never connected")
            changed |= (
                open_alert(session, device.client_id, device.id, spec, now_ms, now_ms, policy, channels)
                is not None
            )
        if verdict.battery_low and (device.client_id, "battery_low") not in open_kinds:
            spec = OpenAlert(
                "battery_low", 4, f"Battery low ({device.battery}%) on {device.label or device.id}"
            )
            changed |= (
                open_alert(session, device.client_id, device.id, spec, now_ms, now_ms, policy, channels)
                is not None
            )
        elif verdict.battery_ok and (device.client_id, "battery_low") in open_kinds:
            changed |= resolve_kind(
                session,
                device.client_id,
                "battery_low",
                "battery_ok",
                f"Battery back at {device.battery}%",
                now_ms,
            )
    return changed


def _candidates(book: PolicyBook, open_kinds: set[tuple[int, str]], now_ms: int) -> Select[Any]:
    """Only the devices that may need attention, chosen by the database: at 10,000 devices the sweep must
    not walk every row while it holds SQLite's write lock. Clients with a policy of their own are judged
    one by one (their thresholds may differ from the organisation's)."""
    org = book.of(None)
    c = Device.__table__.c
    interval_ms = func.coalesce(c.heartbeat_interval_s, org.default_heartbeat_s) * 1000
    battery_alerts = [client for client, kind in open_kinds if kind == "battery_low"]
    return select(Device).where(
        or_(
            Device.client_id.in_(book.clients_with_overrides or {-1}),
            and_(
                c.last_seen_ms.is_not(None),
                or_(c.online.is_(None), c.online.is_(True)),
                c.last_seen_ms + org.missed_heartbeats * interval_ms < now_ms,
            ),
            and_(c.last_seen_ms.is_(None), c.created_ms < now_ms - org.never_connected_after_s * 1000),
            c.battery <= org.battery_low_pct,
            Device.client_id.in_(battery_alerts or [-1]),
        )
    )
