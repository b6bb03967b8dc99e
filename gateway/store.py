"""The gateway's database adapter: one transaction per batch, idempotent on (device, msg_id)."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import BigInteger, Boolean, Integer, String, Table, bindparam, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from protocol.v1 import event_body
from storage.models import DeadLetter, Device, DeviceEvent

from .ingest import Plan

__all__ = ["LivenessUpdate", "known_device_ids", "store_plan"]

_DEVICES: Table = Device.__table__  # type: ignore[assignment]

LivenessUpdate = dict[str, Any]  # {"device_id", "last_seen_ms", "online", "battery"}


_LIVENESS_FIELDS = (
    "last_seen_ms",
    "online",
    "battery",
    "heartbeat_interval_s",
    "firmware",
    "signal",
    "online_changed_ms",
)


def _keep(column: str, type_: Any) -> Any:
    """SET column = COALESCE(:new, column): a missing value keeps what the row has."""
    return func.coalesce(bindparam(f"b_{column}", type_=type_), _DEVICES.c[column])


def known_device_ids(session: Session) -> set[str]:
    return set(session.scalars(select(Device.id)))


def store_plan(session: Session, plan: Plan, liveness: list[LivenessUpdate]) -> set[tuple[str, str]]:
    """Write a batch's events, dead letters and liveness; return the (device, msg_id) pairs newly stored.

    The caller commits; nothing is acknowledged before that commit.
    """
    inserted: set[tuple[str, str]] = set()
    rows = [
        {
            "device_id": status.device_id,
            # '~' is outside the device msg_id alphabet: a device can never collide with these ids.
            "msg_id": f"~status-{inbound.received_ms}-{'on' if status.online else 'off'}",
            "kind": "status",
            "device_ts_ms": inbound.received_ms,
            "received_ms": inbound.received_ms,
            "payload": json.dumps({"online": status.online}),
        }
        for inbound, status in plan.status_changes
    ]
    if plan.events or rows:
        rows += [
            {
                "device_id": msg.device_id,
                "msg_id": msg.msg_id,
                "kind": msg.kind,
                "device_ts_ms": msg.ts,
                "received_ms": inbound.received_ms,
                "payload": json.dumps(event_body(msg), separators=(",", ":")),
            }
            for inbound, msg in plan.events
        ]
        insert_fn = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
        stmt = (
            insert_fn(DeviceEvent)
            .on_conflict_do_nothing(index_elements=["device_id", "msg_id"])
            .returning(DeviceEvent.device_id, DeviceEvent.msg_id)
        )
        inserted = {(d, m) for d, m in session.execute(stmt, rows)}
    if plan.rejects:
        session.execute(
            insert(DeadLetter),
            [
                {
                    "received_ms": r.inbound.received_ms,
                    "topic": r.inbound.topic[:300],
                    "device_id": r.device_id,
                    "reason": r.reason,
                    "detail": r.detail[:500],
                    "payload": r.inbound.payload,
                }
                for r in plan.rejects
            ],
        )
    if liveness:
        session.execute(
            # Core table, not the ORM entity: an executemany UPDATE with our own WHERE clause.
            update(_DEVICES)
            .where(_DEVICES.c.id == bindparam("b_id"))
            .values(
                # A status message carries no battery, a heartbeat no online flag: keep what is known.
                last_seen_ms=_keep("last_seen_ms", BigInteger),
                online=_keep("online", Boolean),
                battery=_keep("battery", Integer),
                heartbeat_interval_s=_keep("heartbeat_interval_s", Integer),
                firmware=_keep("firmware", String),
                signal=_keep("signal", Integer),
                online_changed_ms=_keep("online_changed_ms", BigInteger),
            ),
            [{"b_id": u["device_id"], **{f"b_{k}": u.get(k) for k in _LIVENESS_FIELDS}} for u in liveness],
        )
    return inserted
