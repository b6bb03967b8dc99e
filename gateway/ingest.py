"""The gateway's pure core: sort a batch of received messages into what to store, track and refuse."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping, Set
from dataclasses import dataclass, field
from typing import Any

from protocol.v1 import (
    Alarm,
    DeviceMessage,
    EventMessage,
    Heartbeat,
    ProtocolError,
    Status,
    decode,
    device_id_from_topic,
    event_body,
    is_valid_id,
)

from .limits import judge_clock

__all__ = [
    "REUSED_PREFIX",
    "Inbound",
    "Key",
    "Plan",
    "Reject",
    "Reuse",
    "StoredEvent",
    "judge_reuse",
    "plan_batch",
    "priority_of",
    "reused_alarm_msg_id",
]

Key = tuple[str, str]  # (device id, msg_id): what an event is stored under

# An alarm that came under a used msg_id is stored under this prefix and a hash of its content. '~' is
# outside the device msg_id alphabet (like the '~status-' rows), so a device can never collide with it.
REUSED_PREFIX = "~reused-"
# 40 hex digits (160 bits) of SHA-256: no two alarms of one device share one, and the id fits msg_id's 64.
_REUSED_HASH_HEX = 40

# Lower runs first: an alarm is never queued behind heartbeats (protocol v1, "alarms first"). A power
# fault comes next (the client may be unprotected soon), then the dispenser's care events.
_PRIORITY = {
    "alarm": 0,
    "fault": 1,
    "dose": 2,
    "dispenser": 2,
    "cmdack": 2,
    "schedule": 3,
    "status": 4,
    "heartbeat": 5,
}


@dataclass(frozen=True, slots=True)
class Inbound:
    """One message as it came off the broker, before it is parsed."""

    topic: str
    payload: bytes
    mid: int
    qos: int
    received_ms: int
    # A retained message is the broker's memory (replayed at every subscribe), not a sign of life now.
    retain: bool = False
    link: int = 0  # which broker connection it came on (acks go back the same way)
    refused: str | None = None  # refused before parsing (rate limit); the reason


@dataclass(frozen=True, slots=True)
class Reject:
    inbound: Inbound
    device_id: str | None
    msg_id: str | None
    reason: str
    detail: str


@dataclass
class Plan:
    events: list[tuple[Inbound, EventMessage]] = field(default_factory=list)
    liveness: list[tuple[Inbound, Heartbeat | Status]] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    # Later messages of this batch under a (device, msg_id) already in ``events``: stored once if they are
    # copies, judged like any reuse if they are not (judge_reuse).
    repeats: list[tuple[Inbound, EventMessage]] = field(default_factory=list)
    # Alarms whose device clock is implausible: accepted all the same (an alarm is never refused for a
    # wrong clock), and counted so the device can be fixed.
    clock_skewed: list[tuple[Inbound, EventMessage]] = field(default_factory=list)
    # Live (not retained) online/offline reports, stored as events so the monitor sees every change.
    status_changes: list[tuple[Inbound, Status]] = field(default_factory=list)


def priority_of(topic: str) -> int:
    """Return the queue priority of a topic (unknown kinds last)."""
    return _PRIORITY.get(topic.rsplit("/", 1)[-1], 9)


def plan_batch(batch: Iterable[Inbound], is_known: Callable[[str], bool], now_ms: int) -> Plan:
    """Decode every message of a batch and decide its fate; never raises for bad input."""
    plan = Plan()
    seen: set[tuple[str, str]] = set()
    for inbound in batch:
        if inbound.refused is not None:
            plan.rejects.append(
                Reject(
                    inbound,
                    device_id_from_topic(inbound.topic),
                    _peek_msg_id(inbound.payload),
                    inbound.refused,
                    "too many messages from this device; retry later",
                )
            )
            continue
        try:
            message: DeviceMessage = decode(inbound.topic, inbound.payload)
        except ProtocolError as exc:
            plan.rejects.append(
                Reject(
                    inbound,
                    device_id_from_topic(inbound.topic),
                    _peek_msg_id(inbound.payload),
                    exc.reason,
                    exc.detail,
                )
            )
            continue
        if not is_known(message.device_id):
            plan.rejects.append(
                Reject(
                    inbound,
                    message.device_id,
                    getattr(message, "msg_id", None),
                    "unknown_device",
                    "device is not registered",
                )
            )
            continue
        if isinstance(message, Heartbeat | Status):
            plan.liveness.append((inbound, message))
            if isinstance(message, Status) and not inbound.retain:
                plan.status_changes.append((inbound, message))
            continue
        clock = judge_clock(message.ts, now_ms)
        if not clock.ok:
            if message.kind != "alarm":
                plan.rejects.append(
                    Reject(
                        inbound,
                        message.device_id,
                        message.msg_id,
                        "bad_clock",
                        f"device time is {clock.skew_ms // 1000} s off the server's",
                    )
                )
                continue
            plan.clock_skewed.append((inbound, message))
        key = (message.device_id, message.msg_id)
        if key in seen:
            plan.repeats.append((inbound, message))
        else:
            seen.add(key)
            plan.events.append((inbound, message))
    return plan


def _peek_msg_id(payload: bytes) -> str | None:
    """Best effort: the msg_id of an otherwise invalid message, so the device can be told which one."""
    try:
        body = json.loads(payload[:4096])
    except (ValueError, RecursionError):
        return None
    value = body.get("msg_id") if isinstance(body, dict) else None
    # Only a well-formed id is echoed: the device must be able to read the rejection it gets.
    return value if is_valid_id(value) else None


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """What is stored under a (device, msg_id): the kind and the validated body (``event_body``)."""

    kind: str
    body: dict[str, Any]


@dataclass
class Reuse:
    """The fate of a batch's events once the store knows what each (device, msg_id) holds."""

    # Stored now, or copies of what is stored: acknowledged ``accepted``.
    accepted: list[tuple[Inbound, EventMessage]] = field(default_factory=list)
    # Alarms under a msg_id used for another message: taken all the same (an alarm is never refused for
    # it), stored under the derived msg_id given, and acknowledged ``accepted`` with a warning.
    alarms: list[tuple[Inbound, Alarm, str]] = field(default_factory=list)
    # Any other event under a used msg_id: refused with ``msg_id_reused``.
    refused: list[Reject] = field(default_factory=list)


def reused_alarm_msg_id(alarm: Alarm) -> str:
    """The msg_id an alarm under a reused msg_id is stored under: the same for every copy of it."""
    canonical = json.dumps(event_body(alarm), sort_keys=True, separators=(",", ":"))
    return REUSED_PREFIX + hashlib.sha256(canonical.encode()).hexdigest()[:_REUSED_HASH_HEX]


def judge_reuse(plan: Plan, inserted: Set[Key], stored: Mapping[Key, StoredEvent]) -> Reuse:
    """Compare each event of a batch with what its (device, msg_id) holds, and decide its fate.

    ``inserted`` are the keys this batch's own insert stored (their first message in ``plan.events`` is
    what they hold); ``stored`` holds, for every other key of the batch, the row already in the database.
    A copy is the same kind with the same validated body (``event_body``): the bytes may differ
    (whitespace, field order, unlisted fields, nulls, an explicit default), ``ts`` and every listed field
    may not — a device whose counter restarted sends the same report at another time.
    """
    holds: dict[Key, StoredEvent] = {
        key: StoredEvent(msg.kind, event_body(msg))
        for _inbound, msg in plan.events
        if (key := (msg.device_id, msg.msg_id)) in inserted
    }
    reuse = Reuse()
    for inbound, msg in plan.events + plan.repeats:
        original = holds.get((msg.device_id, msg.msg_id)) or stored.get((msg.device_id, msg.msg_id))
        # No original: the row vanished between insert and read (nothing deletes events); take it as a copy.
        if original is None or (original.kind == msg.kind and original.body == event_body(msg)):
            reuse.accepted.append((inbound, msg))
        elif isinstance(msg, Alarm):
            reuse.alarms.append((inbound, msg, reused_alarm_msg_id(msg)))
        else:
            # A cancel is refused too: the alarm its `cancels` names may be one from before the reuse.
            reuse.refused.append(
                Reject(
                    inbound,
                    msg.device_id,
                    msg.msg_id,
                    "msg_id_reused",
                    f"msg_id already used for a different {original.kind} message",
                )
            )
    return reuse
