"""The gateway's database adapter: one transaction per batch, idempotent on (device, msg_id).

A message under a (device, msg_id) that is already stored is compared with the stored row, in the same
transaction and after the insert has met it: with two gateways on a shared subscription, PostgreSQL makes
the second insert wait for the first one's commit, and then the row read back is the committed one.

Dead letters are bounded (``gateway.ingest.bound_dead_letters``): the rows a device already has in the hour
are counted in the batch's transaction, so the cap holds across restarts. Two gateways storing refusals of
one device at the same moment each see only the other's committed rows, and may together exceed the cap by
what they stored meanwhile; the summary rows' counts stay exact (each adds its own), though such a race may
leave two summary rows for one device, hour and reason.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
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
    or_,
    select,
    tuple_,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from protocol.stored import stored_payload
from protocol.v1 import EventMessage
from storage.models import DeadLetter, Device, DeviceEvent

from .ingest import (
    DEAD_LETTER_KEEP_BYTES,
    DEAD_LETTER_WINDOW_MS,
    DEAD_LETTERS_PER_HOUR,
    Key,
    Overflow,
    Plan,
    Reject,
    Reuse,
    StoredEvent,
    bound_dead_letters,
    judge_reuse,
)

__all__ = [
    "LivenessUpdate",
    "Stored",
    "dead_letter_row",
    "known_device_ids",
    "store_batch",
    "store_liveness",
    "store_plan",
]

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
    counted_only: int = 0  # refusals beyond a device's dead-letter cap: counted on a summary row, not stored


def store_plan(session: Session, plan: Plan, liveness: list[LivenessUpdate]) -> set[Key]:
    """Write a batch's events, dead letters and liveness; return the (device, msg_id) pairs newly stored.

    The caller commits; nothing is acknowledged before that commit.
    """
    stored = store_batch(session, plan)
    store_liveness(session, liveness)
    return stored.inserted


def store_batch(session: Session, plan: Plan, *, dead_letter_cap: int = DEAD_LETTERS_PER_HOUR) -> Stored:
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
            "payload": stored_payload(status),
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
    counted_only = _store_dead_letters(session, plan.rejects + reuse.refused, dead_letter_cap)
    return Stored(inserted, reuse, counted_only)


def dead_letter_row(reject: Reject) -> dict[str, Any]:
    """A refusal as a dead-letter row: its payload's first bytes, the whole payload's size and SHA-256."""
    payload = reject.inbound.payload
    return {
        "received_ms": reject.inbound.received_ms,
        "topic": reject.inbound.topic[:300],
        "device_id": reject.device_id,
        "reason": reject.reason,
        "detail": reject.detail[:500],
        "payload": payload[:DEAD_LETTER_KEEP_BYTES],
        "payload_size": len(payload),
        "payload_sha256": hashlib.sha256(payload).hexdigest(),
        "refusals": 1,
    }


def _store_dead_letters(session: Session, rejects: Sequence[Reject], cap: int) -> int:
    """Store refusals up to each device's hourly cap, count the rest; return how many were only counted."""
    if not rejects:
        return 0
    windows = {r.inbound.received_ms // DEAD_LETTER_WINDOW_MS for r in rejects}
    devices = {r.device_id for r in rejects}
    stored: dict[tuple[str | None, int], int] = {}
    for window in windows:
        rows = session.execute(
            select(DeadLetter.device_id, func.count())
            .where(_in_window(window), _of_devices(devices), DeadLetter.payload_size.is_not(None))
            .group_by(DeadLetter.device_id)
        )
        stored.update({(device, window): n for device, n in rows})
    keep, overflow = bound_dead_letters(rejects, stored, cap)
    if keep:
        session.execute(insert(DeadLetter), [dead_letter_row(r) for r in keep])
    if overflow:
        _count_overflow(session, overflow, cap)
    return sum(o.count for o in overflow)


def _count_overflow(session: Session, overflow: Sequence[Overflow], cap: int) -> None:
    """Add each overflow's count to its device, hour and reason's summary row (made at the first)."""
    summaries: dict[tuple[str | None, int, str], int] = {}
    for window in {o.window for o in overflow}:
        found = session.execute(
            select(DeadLetter.id, DeadLetter.device_id, DeadLetter.reason).where(
                _in_window(window),
                _of_devices({o.device_id for o in overflow}),
                DeadLetter.payload_size.is_(None),
            )
        )
        summaries.update({(device, window, reason): row_id for row_id, device, reason in found})
    for o in overflow:
        newest = {
            "received_ms": o.newest.inbound.received_ms,
            "topic": o.newest.inbound.topic[:300],
            "detail": f"beyond {cap} dead letters an hour from this device: counted, not stored; "
            f"the newest: {o.newest.detail}"[:500],
        }
        row_id = summaries.get((o.device_id, o.window, o.reason))
        if row_id is None:
            session.execute(
                insert(DeadLetter).values(
                    device_id=o.device_id, reason=o.reason, payload=b"", refusals=o.count, **newest
                )
            )
        else:
            session.execute(
                update(DeadLetter)
                .where(DeadLetter.id == row_id)
                .values(refusals=DeadLetter.refusals + o.count, **newest)
            )


def _in_window(window: int) -> Any:
    start = window * DEAD_LETTER_WINDOW_MS
    return DeadLetter.received_ms.between(start, start + DEAD_LETTER_WINDOW_MS - 1)


def _of_devices(devices: set[str | None]) -> Any:
    named = DeadLetter.device_id.in_(sorted(d for d in devices if d is not None))
    return or_(named, DeadLetter.device_id.is_(None)) if None in devices else named


def _event_row(received_ms: int, msg: EventMessage) -> dict[str, Any]:
    return {
        "device_id": msg.device_id,
        "msg_id": msg.msg_id,
        "kind": msg.kind,
        "device_ts_ms": msg.ts,
        "received_ms": received_ms,
        "payload": stored_payload(msg),
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
