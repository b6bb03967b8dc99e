"""Device protocol v1: the pure wire codec.

One function, :func:`decode`, turns ``(topic, payload)`` into a frozen message or raises
:class:`ProtocolError`; :func:`encode` is its inverse. Nothing here reads the clock, the network or the
database. ``docs/protocol.md`` is the human description of the same rules.

Exceptions::

    ProtocolError            every rejection; ``.reason`` is a short stable code for metrics and nacks
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from typing import Any, Final, Literal

__all__ = [
    "ALARM_KINDS",
    "DOSE_EVENTS",
    "EVENT_KINDS",
    "MAX_PAYLOAD_BYTES",
    "TOPIC_ROOT",
    "Ack",
    "Alarm",
    "DeviceMessage",
    "DoseEvent",
    "Heartbeat",
    "ProtocolError",
    "Status",
    "ack_topic",
    "command_topic",
    "decode",
    "decode_ack",
    "device_id_from_topic",
    "encode",
    "encode_ack",
    "is_valid_id",
    "topic_for",
]

TOPIC_ROOT: Final = "carealarm/v1/devices"
# A real alarm or dose message is a few hundred bytes; 4 KiB leaves room for growth while refusing
# anything that could be used to exhaust memory or the database.
MAX_PAYLOAD_BYTES: Final = 4096
# Device ids and message ids are used in topics and database keys: a safe, bounded alphabet.
_ID_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")
# 1e15 ms is the year 33658; anything above is garbage, not a clock error.
_MAX_TS_MS: Final = 10**15

ALARM_KINDS: Final = frozenset({"button", "pendant", "fall", "smoke", "bed_exit", "door", "other"})
DOSE_EVENTS: Final = frozenset({"due", "taken", "missed"})
# Message kinds that are events: stored durably and acknowledged by the application ack.
EVENT_KINDS: Final = frozenset({"alarm", "dose"})


class ProtocolError(ValueError):
    """A device message that is not valid protocol v1; ``reason`` is a stable code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Heartbeat:
    device_id: str
    msg_id: str
    ts: int
    battery: int | None = None
    signal: int | None = None
    firmware: str | None = None
    interval_s: int | None = None
    kind: Literal["heartbeat"] = "heartbeat"


@dataclass(frozen=True, slots=True)
class Alarm:
    device_id: str
    msg_id: str
    ts: int
    alarm_kind: str = "button"
    kind: Literal["alarm"] = "alarm"


@dataclass(frozen=True, slots=True)
class DoseEvent:
    device_id: str
    msg_id: str
    ts: int
    event: str
    dose_id: str
    due_ts: int | None = None
    kind: Literal["dose"] = "dose"


@dataclass(frozen=True, slots=True)
class Status:
    """Retained online/offline state; the broker publishes ``offline`` as the Last Will."""

    device_id: str
    online: bool
    kind: Literal["status"] = "status"


@dataclass(frozen=True, slots=True)
class Ack:
    """Server to device: the application acknowledgement of one event.

    ``msg_id`` is None only in a rejection of a payload so broken that its msg_id could not be read.
    """

    msg_id: str | None
    status: Literal["accepted", "rejected"]
    reason: str | None = None


DeviceMessage = Heartbeat | Alarm | DoseEvent | Status


def topic_for(device_id: str, kind: str) -> str:
    """Return the topic a device publishes ``kind`` on."""
    return f"{TOPIC_ROOT}/{device_id}/{kind}"


def ack_topic(device_id: str) -> str:
    return topic_for(device_id, "ack")


def command_topic(device_id: str) -> str:
    return topic_for(device_id, "cmd")


def is_valid_id(value: object) -> bool:
    """True for a string that is a valid device id, msg_id or dose_id."""
    return isinstance(value, str) and _ID_RE.fullmatch(value) is not None


def device_id_from_topic(topic: str) -> str | None:
    """Return the device id of a well-formed device topic, else None."""
    parts = topic.split("/")
    if len(parts) != 5 or "/".join(parts[:3]) != TOPIC_ROOT or not _ID_RE.fullmatch(parts[3]):
        return None
    return parts[3]


def decode(topic: str, payload: bytes) -> DeviceMessage:
    """Parse one device message; raise ProtocolError (and nothing else) when it is not valid."""
    device_id = device_id_from_topic(topic)
    if device_id is None:
        raise ProtocolError("bad_topic", f"not a protocol v1 device topic: {topic[:120]!r}")
    kind = topic.rsplit("/", 1)[1]
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise ProtocolError("too_large", f"{len(payload)} bytes, limit {MAX_PAYLOAD_BYTES}")
    if kind == "status":
        text = payload.decode("utf-8", "replace").strip()
        if text in ("online", "offline"):
            return Status(device_id, text == "online")
        raise ProtocolError("bad_value", "status must be 'online' or 'offline'")
    if kind not in ("heartbeat", "alarm", "dose"):
        raise ProtocolError("unknown_kind", f"unknown message kind {kind[:40]!r}")
    body = _json_object(payload)
    msg_id = _id(body, "msg_id")
    ts = _int(body, "ts", 0, _MAX_TS_MS)
    if kind == "heartbeat":
        return Heartbeat(
            device_id,
            msg_id,
            ts,
            battery=_opt_int(body, "battery", 0, 100),
            signal=_opt_int(body, "signal", -200, 0),
            firmware=_opt_str(body, "firmware", 64),
            interval_s=_opt_int(body, "interval_s", 5, 86_400),
        )
    if kind == "alarm":
        alarm_kind = _opt_str(body, "alarm_kind", 32) or "button"
        if alarm_kind not in ALARM_KINDS:
            raise ProtocolError("bad_value", f"alarm_kind must be one of {sorted(ALARM_KINDS)}")
        return Alarm(device_id, msg_id, ts, alarm_kind)
    event = _str(body, "event", 16)
    if event not in DOSE_EVENTS:
        raise ProtocolError("bad_value", f"event must be one of {sorted(DOSE_EVENTS)}")
    return DoseEvent(
        device_id, msg_id, ts, event, _id(body, "dose_id"), _opt_int(body, "due_ts", 0, _MAX_TS_MS)
    )


def encode(message: DeviceMessage) -> tuple[str, bytes]:
    """Serialise a device message to ``(topic, payload)``; the inverse of :func:`decode`."""
    if isinstance(message, Status):
        return topic_for(message.device_id, "status"), b"online" if message.online else b"offline"
    fields = asdict(message)
    del fields["device_id"], fields["kind"]
    body = {k: v for k, v in fields.items() if v is not None}
    return topic_for(message.device_id, message.kind), json.dumps(body, separators=(",", ":")).encode()


def encode_ack(ack: Ack) -> bytes:
    body: dict[str, Any] = {"msg_id": ack.msg_id, "status": ack.status}
    if ack.reason is not None:
        body["reason"] = ack.reason
    return json.dumps(body, separators=(",", ":")).encode()


def decode_ack(payload: bytes) -> Ack:
    """Parse an application ack (used by devices and the simulator)."""
    body = _json_object(payload)
    status = _str(body, "status", 16)
    if status not in ("accepted", "rejected"):
        raise ProtocolError("bad_value", "status must be accepted or rejected")
    msg_id = None if body.get("msg_id") is None and status == "rejected" else _id(body, "msg_id")
    return Ack(msg_id, "accepted" if status == "accepted" else "rejected", _opt_str(body, "reason", 200))


def _json_object(payload: bytes) -> dict[str, Any]:
    try:
        body = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ProtocolError("bad_json", f"payload is not UTF-8 JSON ({type(exc).__name__})") from None
    if not isinstance(body, dict):
        raise ProtocolError("bad_json", "payload must be a JSON object")
    return body


def _id(body: dict[str, Any], key: str) -> str:
    value = body.get(key)
    if value is None:
        raise ProtocolError("missing_field", f"{key} is required")
    if not isinstance(value, str):
        raise ProtocolError("bad_type", f"{key} must be a string")
    if not _ID_RE.fullmatch(value):
        raise ProtocolError("bad_value", f"{key} must be 1-64 characters of A-Z a-z 0-9 _ . : -")
    return value


def _int(body: dict[str, Any], key: str, low: int, high: int) -> int:
    value = body.get(key)
    if value is None:
        raise ProtocolError("missing_field", f"{key} is required")
    return _check_int(key, value, low, high)


def _opt_int(body: dict[str, Any], key: str, low: int, high: int) -> int | None:
    value = body.get(key)
    return None if value is None else _check_int(key, value, low, high)


def _check_int(key: str, value: object, low: int, high: int) -> int:
    # bool is an int subclass in Python; true/false is never a number on the wire.
    if isinstance(value, bool) or not isinstance(value, int):
        raise ProtocolError("bad_type", f"{key} must be an integer")
    if not low <= value <= high:
        raise ProtocolError("bad_value", f"{key} must be between {low} and {high}")
    return value


def _str(body: dict[str, Any], key: str, max_len: int) -> str:
    value = _opt_str(body, key, max_len)
    if value is None:
        raise ProtocolError("missing_field", f"{key} is required")
    return value


def _opt_str(body: dict[str, Any], key: str, max_len: int) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ProtocolError("bad_type", f"{key} must be a string")
    if not 0 < len(value) <= max_len:
        raise ProtocolError("bad_value", f"{key} must be 1-{max_len} characters")
    return value
