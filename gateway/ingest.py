"""The gateway's pure core: sort a batch of received messages into what to store, track and refuse.

Refused messages become dead letters, bounded twice over (``bound_dead_letters``): each keeps only the first
``DEAD_LETTER_KEEP_BYTES`` of its payload (with the whole payload's size and SHA-256), and a device has at
most ``DEAD_LETTERS_PER_HOUR`` of them stored per clock hour; its further refusals in that hour are counted,
per reason, on one summary row each.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping, Sequence, Set
from dataclasses import dataclass, field
from typing import Any, Final

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
    "DEAD_LETTERS_PER_HOUR",
    "DEAD_LETTER_KEEP_BYTES",
    "DEAD_LETTER_WINDOW_MS",
    "RETAINABLE_KINDS",
    "REUSED_PREFIX",
    "Inbound",
    "Key",
    "Overflow",
    "Plan",
    "Reject",
    "Reuse",
    "StoredEvent",
    "bound_dead_letters",
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

# The one kind a device may publish retained (protocol v1 §5): its last online/offline word. Any other
# retained message would be replayed to the gateway at every subscribe (every restart), so it is refused
# with ``retained`` and cleared from the broker.
RETAINABLE_KINDS: Final = frozenset({"status"})

# What a dead letter keeps of a refused payload: as much as a valid message may hold (protocol v1
# MAX_PAYLOAD_BYTES), enough to read what a broken device sent; the size and SHA-256 say the rest.
DEAD_LETTER_KEEP_BYTES: Final = 4096
# Dead letters stored per device and clock hour. A device that is only misconfigured is refused each event
# once (then it stops resending), or each heartbeat if those are broken (12-120 an hour, all alike): twenty
# examples of a failure are plenty to diagnose it, and the count says how often it happened. A broken or
# hostile device may be refused 18,000 times an hour (the rate limit, 5/s): beyond twenty its refusals are
# only counted, so it costs at most 20 dead letters of 4.6 KB (SQLite) to 6.2 KB (PostgreSQL) an hour,
# ~3 MB a day, instead of all it sends (60 x 1 MB a minute took 98 MB).
DEAD_LETTERS_PER_HOUR: Final = 20
DEAD_LETTER_WINDOW_MS: Final = 3_600_000  # the clock hour the cap counts in

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
    # Retained messages on a topic other than status (refused ``retained``, in ``rejects`` too): each topic
    # is cleared at the broker (an empty retained message) once the dead letter is committed.
    clear_retained: list[Inbound] = field(default_factory=list)
    # Empty messages: what clearing a retained message looks like to a subscriber (the gateway's own
    # clearing included). Nothing to store or answer: taken from the broker, nothing more.
    empty: list[Inbound] = field(default_factory=list)
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
        message = _admit(plan, inbound, is_known)
        if message is None:
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


def _admit(plan: Plan, inbound: Inbound, is_known: Callable[[str], bool]) -> DeviceMessage | None:
    """The decoded message of a registered device, or None once ``plan`` holds what became of it instead."""
    # A retained message reaches the gateway flagged only as the broker's replay at a subscribe (a live
    # one is delivered unflagged): memory of the past, to be refused and forgotten, not news.
    if inbound.retain and inbound.topic.rsplit("/", 1)[-1] not in RETAINABLE_KINDS:
        plan.rejects.append(
            _refusal(
                inbound,
                "retained",
                "retained message replayed by the broker; only status may be retained (cleared)",
            )
        )
        plan.clear_retained.append(inbound)
        return None
    if not inbound.payload:
        plan.empty.append(inbound)
        return None
    if inbound.refused is not None:
        plan.rejects.append(
            _refusal(inbound, inbound.refused, "too many messages from this device; retry later")
        )
        return None
    try:
        message: DeviceMessage = decode(inbound.topic, inbound.payload)
    except ProtocolError as exc:
        plan.rejects.append(_refusal(inbound, exc.reason, exc.detail))
        return None
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
        return None
    return message


def _refusal(inbound: Inbound, reason: str, detail: str) -> Reject:
    """A refusal of a message that was not decoded: its device and msg_id as far as they can be read."""
    return Reject(inbound, device_id_from_topic(inbound.topic), _peek_msg_id(inbound.payload), reason, detail)


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
class Overflow:
    """A device's refusals of one reason, in one clock hour, beyond its dead-letter cap: counted only."""

    device_id: str | None
    window: int  # received_ms // DEAD_LETTER_WINDOW_MS
    reason: str
    count: int
    newest: Reject  # its time, topic and detail go on the summary row


def bound_dead_letters(
    rejects: Sequence[Reject],
    stored: Mapping[tuple[str | None, int], int],
    cap: int = DEAD_LETTERS_PER_HOUR,
) -> tuple[list[Reject], list[Overflow]]:
    """Split refusals into those stored as dead letters and, per device, hour and reason, those only counted.

    ``stored`` holds, per (device, window), how many dead letters are already stored whole; a device's
    refusals are stored in arrival order until it has ``cap`` in that window. Refusals of no device (a
    topic without a valid device id) share one budget, under ``None``.
    """
    used = dict(stored)
    keep: list[Reject] = []
    over: dict[tuple[str | None, int, str], list[Reject]] = {}
    for reject in rejects:
        bucket = (reject.device_id, reject.inbound.received_ms // DEAD_LETTER_WINDOW_MS)
        if used.get(bucket, 0) < cap:
            used[bucket] = used.get(bucket, 0) + 1
            keep.append(reject)
        else:
            over.setdefault((*bucket, reject.reason), []).append(reject)
    overflow = [
        Overflow(device, window, reason, len(group), max(group, key=lambda r: r.inbound.received_ms))
        for (device, window, reason), group in over.items()
    ]
    return keep, overflow


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
