"""The gateway's pure core: sort a batch of received messages into what to store, track and refuse."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from protocol.v1 import (
    DeviceMessage,
    EventMessage,
    Heartbeat,
    ProtocolError,
    Status,
    decode,
    device_id_from_topic,
    is_valid_id,
)

from .limits import judge_clock

__all__ = ["Inbound", "Plan", "Reject", "plan_batch", "priority_of"]

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
    # Copies of an event already in this batch: acked like the first, stored once.
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
