"""The gateway's database adapter: one transaction per batch, idempotent on (device, msg_id).

A message under a (device, msg_id) that is already stored is compared with the stored row, in the same
transaction and after the insert has met it: with two gateways on a shared subscription, PostgreSQL makes
the second insert wait for the first one's commit, and then the row read back is the committed one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Integer,
    String,
    Table,
    bindparam,
    func,
    insert,
    select,
    tuple_,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from protocol.v1 import EventMessage, event_body
from storage.models import DeadLetter, Device, DeviceEvent

from .ingest import Key, Plan, Reuse, StoredEvent, judge_reuse

__all__ = ["LivenessUpdate", "Stored", "known_device_ids", "store_batch", "store_liveness", "store_plan"]

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


@dataclass(frozen=True, slots=True)
class Stored:
    """What a batch's transaction did: the keys it stored, and each event's fate (what to acknowledge)."""

    inserted: set[Key]  # (device, msg_id) pairs stored by this transaction, derived msg_ids included
    reuse: Reuse


def store_plan(session: Session, plan: Plan, liveness: list[LivenessUpdate]) -> set[Key]:
    """Write a batch's events, dead letters and liveness; return the (device, msg_id) pairs newly stored.

    The caller commits; nothing is acknowledged before that commit.
    """
    stored = store_batch(session, plan)
    store_liveness(session, liveness)
    return stored.inserted


def store_batch(session: Session, plan: Plan) -> Stored:
    """Write a batch's events and dead letters, judging every msg_id met again against its stored row.

    A new msg_id costs nothing more than the one multi-row insert; only keys the insert met in the
    database are read back (one query for the batch), and only reused alarms are inserted again.
    """
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
    rows += [_event_row(inbound.received_ms, msg) for inbound, msg in plan.events]
    inserted = _insert_events(session, rows)
    met = {(msg.device_id, msg.msg_id) for _inbound, msg in plan.events} - inserted
    reuse = judge_reuse(plan, inserted, _stored_events(session, met))
    if reuse.alarms:
        derived: dict[Key, dict[str, Any]] = {}
        for inbound, alarm, msg_id in reuse.alarms:  # copies of one reused alarm share a derived id
            row = _event_row(inbound.received_ms, alarm) | {"msg_id": msg_id, "reused_msg_id": alarm.msg_id}
            derived.setdefault((alarm.device_id, msg_id), row)
        inserted |= _insert_events(session, list(derived.values()))
    rejects = plan.rejects + reuse.refused
    if rejects:
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
                for r in rejects
            ],
        )
    return Stored(inserted, reuse)


def _event_row(received_ms: int, msg: EventMessage) -> dict[str, Any]:
    return {
        "device_id": msg.device_id,
        "msg_id": msg.msg_id,
        "kind": msg.kind,
        "device_ts_ms": msg.ts,
        "received_ms": received_ms,
        "payload": json.dumps(event_body(msg), separators=(",", ":")),
    }


def _insert_events(session: Session, rows: list[dict[str, Any]]) -> set[Key]:
    """INSERT .. ON CONFLICT (device, msg_id) DO NOTHING; return the keys actually inserted."""
    if not rows:
        return set()
    insert_fn = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    stmt = (
        insert_fn(DeviceEvent)
        .on_conflict_do_nothing(index_elements=["device_id", "msg_id"])
        .returning(DeviceEvent.device_id, DeviceEvent.msg_id)
    )
    return {(d, m) for d, m in session.execute(stmt, rows)}


def _stored_events(session: Session, keys: set[Key]) -> dict[Key, StoredEvent]:
    """Read back the rows an insert met (a separate statement: it sees rows committed meanwhile)."""
    if not keys:
        return {}
    key = tuple_(DeviceEvent.device_id, DeviceEvent.msg_id)
    found = session.execute(
        select(DeviceEvent.device_id, DeviceEvent.msg_id, DeviceEvent.kind, DeviceEvent.payload).where(
            key.in_(sorted(keys))
        )
    )
    return {(d, m): StoredEvent(kind, json.loads(payload)) for d, m, kind, payload in found}


def store_liveness(session: Session, liveness: list[LivenessUpdate]) -> None:
    """Write what heartbeats and status reports said (newest receive time, battery, online flag)."""
    if not liveness:
        return
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
