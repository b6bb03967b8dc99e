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
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Final, Literal

from .fields import (
    ID_RE as _ID_RE,
)
from .fields import (
    ProtocolError,
)
from .fields import (
    choice as _choice,
)
from .fields import (
    json_object as _json_object,
)
from .fields import (
    opt_int as _opt_int,
)
from .fields import (
    opt_str as _opt_str,
)
from .fields import (
    req_id as _id,
)
from .fields import (
    req_int as _int,
)
from .fields import (
    req_str as _str,
)

__all__ = [
    "ALARM_KINDS",
    "COMMANDS",
    "COMMAND_RESULTS",
    "DEVICE_KINDS",
    "DISPENSER_EVENTS",
    "DOSE_EVENTS",
    "EVENT_KINDS",
    "FAULTS",
    "MAX_PAYLOAD_BYTES",
    "TOPIC_ROOT",
    "Ack",
    "Alarm",
    "AlarmCancel",
    "Command",
    "CommandAck",
    "DeviceMessage",
    "DispenserEvent",
    "DoseEvent",
    "EventMessage",
    "Fault",
    "Heartbeat",
    "ProtocolError",
    "ScheduleReport",
    "ScheduledDose",
    "Status",
    "ack_topic",
    "command_topic",
    "decode",
    "decode_ack",
    "decode_body",
    "decode_command",
    "device_id_from_topic",
    "encode",
    "encode_ack",
    "encode_command",
    "event_body",
    "is_valid_id",
    "topic_for",
]

TOPIC_ROOT: Final = "carealarm/v1/devices"
# A real alarm or dose message is a few hundred bytes; 4 KiB leaves room for growth while refusing
# anything that could be used to exhaust memory or the database.
MAX_PAYLOAD_BYTES: Final = 4096
# 1e15 ms is the year 33658; anything above is garbage, not a clock error.
_MAX_TS_MS: Final = 10**15

ALARM_KINDS: Final = frozenset({"button", "pendant", "fall", "smoke", "bed_exit", "door", "other"})
DOSE_EVENTS: Final = frozenset({"due", "taken", "missed"})
DISPENSER_EVENTS: Final = frozenset({"dispense_error", "tamper", "lid_open", "stock_low"})
FAULTS: Final = frozenset({"power_lost", "power_restored", "battery_low", "hardware", "reboot", "network"})
COMMAND_RESULTS: Final = frozenset({"done", "failed", "refused"})
COMMANDS: Final = frozenset({"remind", "set_schedule", "set_heartbeat", "ring"})
# What a device publishes, by the last topic level.
DEVICE_KINDS: Final = ("heartbeat", "alarm", "dose", "dispenser", "schedule", "fault", "cmdack", "status")
# Message kinds that are events: stored durably and acknowledged by the application ack. Heartbeats and
# status are state, not events: the newest one supersedes the others.
EVENT_KINDS: Final = frozenset({"alarm", "dose", "dispenser", "schedule", "fault", "cmdack"})
# A dispenser holds at most this many doses a day (one every hour).
_MAX_SCHEDULE: Final = 24
_HHMM: Final = re.compile(r"(?:[01][0-9]|2[0-3]):[0-5][0-9]")


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
class AlarmCancel:
    """The client cancelled an alarm within the device's pre-alarm window (``cancels`` = its msg_id)."""

    device_id: str
    msg_id: str
    ts: int
    cancels: str
    kind: Literal["alarm"] = "alarm"


@dataclass(frozen=True, slots=True)
class DispenserEvent:
    """A dispenser's own trouble: a dispense error, tampering, an open lid, stock running low."""

    device_id: str
    msg_id: str
    ts: int
    event: str
    doses_left: int | None = None
    detail: str | None = None
    kind: Literal["dispenser"] = "dispenser"


@dataclass(frozen=True, slots=True)
class ScheduledDose:
    dose_id: str
    at: str  # "HH:MM", the client's local time
    label: str | None = None


@dataclass(frozen=True, slots=True)
class ScheduleReport:
    """The schedule the dispenser holds now (sent at start-up and after every change)."""

    device_id: str
    msg_id: str
    ts: int
    version: int
    doses: tuple[ScheduledDose, ...]
    kind: Literal["schedule"] = "schedule"


@dataclass(frozen=True, slots=True)
class Fault:
    """A device fault or power event."""

    device_id: str
    msg_id: str
    ts: int
    fault: str
    detail: str | None = None
    kind: Literal["fault"] = "fault"


@dataclass(frozen=True, slots=True)
class CommandAck:
    """The device's own answer to a command it received on its ``cmd`` topic."""

    device_id: str
    msg_id: str
    ts: int
    cmd_id: str
    result: str
    reason: str | None = None
    kind: Literal["cmdack"] = "cmdack"


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
    ``warning`` is "accepted, but": the event was taken and the device has something to fix
    (``msg_id_reused``: an alarm came under a msg_id already used for another message).
    """

    msg_id: str | None
    status: Literal["accepted", "rejected"]
    reason: str | None = None
    warning: str | None = None


@dataclass(frozen=True, slots=True)
class Command:
    """Server to device, on the ``cmd`` topic. ``args`` depend on ``command``:

    - ``remind``: ``{"dose_id"}`` — show the dose reminder again;
    - ``set_schedule``: ``{"version", "doses": [{"dose_id", "at", "label"?}]}``;
    - ``set_heartbeat``: ``{"interval_s"}``;
    - ``ring``: ``{"call_id", "caller", "token"?, "url"?}`` — an incoming video call; ``token``
      authenticates the device's signalling socket for this call only, ``url`` is where central is.
    """

    cmd_id: str
    ts: int
    command: str
    args: tuple[tuple[str, Any], ...]

    def arg(self, name: str) -> Any:
        return dict(self.args).get(name)


DeviceMessage = (
    Heartbeat
    | Alarm
    | AlarmCancel
    | DoseEvent
    | DispenserEvent
    | ScheduleReport
    | Fault
    | CommandAck
    | Status
)
EventMessage = Alarm | AlarmCancel | DoseEvent | DispenserEvent | ScheduleReport | Fault | CommandAck


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
    if kind not in DEVICE_KINDS:
        raise ProtocolError("unknown_kind", f"unknown message kind {kind[:40]!r}")
    body = _json_object(payload)
    return decode_body(kind, device_id, _id(body, "msg_id"), _int(body, "ts", 0, _MAX_TS_MS), body)


def decode_body(kind: str, device_id: str, msg_id: str, ts: int, body: dict[str, Any]) -> DeviceMessage:
    """Parse the JSON body of a ``kind`` message whose device, msg_id and ts are known already."""
    decoder = _DECODERS.get(kind)
    if decoder is None:
        raise ProtocolError("unknown_kind", f"unknown message kind {kind[:40]!r}")
    return decoder(device_id, msg_id, ts, body)


def _heartbeat(device_id: str, msg_id: str, ts: int, body: dict[str, Any]) -> Heartbeat:
    return Heartbeat(
        device_id,
        msg_id,
        ts,
        battery=_opt_int(body, "battery", 0, 100),
        signal=_opt_int(body, "signal", -200, 0),
        firmware=_opt_str(body, "firmware", 64),
        interval_s=_opt_int(body, "interval_s", 5, 86_400),
    )


def _alarm(device_id: str, msg_id: str, ts: int, body: dict[str, Any]) -> Alarm | AlarmCancel:
    if body.get("cancels") is not None:
        return AlarmCancel(device_id, msg_id, ts, _id(body, "cancels"))
    return Alarm(device_id, msg_id, ts, _choice(body, "alarm_kind", ALARM_KINDS, default="button"))


def _dose(device_id: str, msg_id: str, ts: int, body: dict[str, Any]) -> DoseEvent:
    event = _choice(body, "event", DOSE_EVENTS)
    return DoseEvent(
        device_id, msg_id, ts, event, _id(body, "dose_id"), _opt_int(body, "due_ts", 0, _MAX_TS_MS)
    )


def _dispenser(device_id: str, msg_id: str, ts: int, body: dict[str, Any]) -> DispenserEvent:
    event = _choice(body, "event", DISPENSER_EVENTS)
    doses_left = _opt_int(body, "doses_left", 0, 10_000)
    if event == "stock_low" and doses_left is None:
        raise ProtocolError("missing_field", "doses_left is required for stock_low")
    return DispenserEvent(device_id, msg_id, ts, event, doses_left, _opt_str(body, "detail", 200))


def _schedule(device_id: str, msg_id: str, ts: int, body: dict[str, Any]) -> ScheduleReport:
    return ScheduleReport(device_id, msg_id, ts, _int(body, "version", 0, 2**31), _doses(body))


def _fault(device_id: str, msg_id: str, ts: int, body: dict[str, Any]) -> Fault:
    return Fault(device_id, msg_id, ts, _choice(body, "fault", FAULTS), _opt_str(body, "detail", 200))


def _cmdack(device_id: str, msg_id: str, ts: int, body: dict[str, Any]) -> CommandAck:
    result = _choice(body, "result", COMMAND_RESULTS)
    return CommandAck(device_id, msg_id, ts, _id(body, "cmd_id"), result, _opt_str(body, "reason", 200))


_DECODERS: Final[dict[str, Callable[[str, str, int, dict[str, Any]], DeviceMessage]]] = {
    "heartbeat": _heartbeat,
    "alarm": _alarm,
    "dose": _dose,
    "dispenser": _dispenser,
    "schedule": _schedule,
    "fault": _fault,
    "cmdack": _cmdack,
}


def _doses(body: dict[str, Any]) -> tuple[ScheduledDose, ...]:
    raw = body.get("doses")
    if raw is None:
        raise ProtocolError("missing_field", "doses is required")
    if not isinstance(raw, list) or not all(isinstance(d, dict) for d in raw):
        raise ProtocolError("bad_type", "doses must be a list of objects")
    if len(raw) > _MAX_SCHEDULE:
        raise ProtocolError("bad_value", f"at most {_MAX_SCHEDULE} doses")
    doses = []
    for item in raw:
        at = _str(item, "at", 5)
        if not _HHMM.fullmatch(at):
            raise ProtocolError("bad_value", "at must be HH:MM (00:00-23:59)")
        doses.append(ScheduledDose(_id(item, "dose_id"), at, _opt_str(item, "label", 100)))
    return tuple(doses)


def encode(message: DeviceMessage) -> tuple[str, bytes]:
    """Serialise a device message to ``(topic, payload)``; the inverse of :func:`decode`."""
    if isinstance(message, Status):
        return topic_for(message.device_id, "status"), b"online" if message.online else b"offline"
    body = event_body(message)
    return topic_for(message.device_id, message.kind), _dumps(body)


def event_body(message: Heartbeat | EventMessage) -> dict[str, Any]:
    """The JSON body of a message as it goes on the wire (also how the gateway stores an event)."""
    fields = asdict(message)
    del fields["device_id"], fields["kind"]
    if "doses" in fields:
        fields["doses"] = [_drop_none(d) for d in fields["doses"]]
    return _drop_none(fields)


def encode_command(command: Command) -> bytes:
    """Serialise a command for a device's ``cmd`` topic (validated: a bad command is our bug)."""
    decode_command(_dumps(_command_body(command)))
    return _dumps(_command_body(command))


def decode_command(payload: bytes) -> Command:
    """Parse a command (devices and the simulator use this)."""
    body = _json_object(payload)
    command = _choice(body, "command", COMMANDS)
    args = body.get("args")
    if not isinstance(args, dict):
        raise ProtocolError("bad_type", "args must be an object")
    if command == "remind":
        parsed: dict[str, Any] = {"dose_id": _id(args, "dose_id")}
    elif command == "set_schedule":
        doses = [asdict(d) for d in _doses(args)]
        parsed = {"version": _int(args, "version", 0, 2**31), "doses": [_drop_none(d) for d in doses]}
    elif command == "set_heartbeat":
        parsed = {"interval_s": _int(args, "interval_s", 5, 86_400)}
    else:
        parsed = {"call_id": _id(args, "call_id"), "caller": _str(args, "caller", 100)}
        # Optional: the per-call signalling token and the signalling server's base URL (docs/video-calls.md).
        for key, max_len in (("token", 200), ("url", 300)):
            value = _opt_str(args, key, max_len)
            if value is not None:
                parsed[key] = value
    return Command(
        _id(body, "cmd_id"), _int(body, "ts", 0, _MAX_TS_MS), command, tuple(sorted(parsed.items()))
    )


def _command_body(command: Command) -> dict[str, Any]:
    return {
        "cmd_id": command.cmd_id,
        "ts": command.ts,
        "command": command.command,
        "args": dict(command.args),
    }


def _dumps(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()


def _drop_none(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if v is not None}


def encode_ack(ack: Ack) -> bytes:
    body: dict[str, Any] = {"msg_id": ack.msg_id, "status": ack.status}
    if ack.reason is not None:
        body["reason"] = ack.reason
    if ack.warning is not None:
        body["warning"] = ack.warning
    return json.dumps(body, separators=(",", ":")).encode()


def decode_ack(payload: bytes) -> Ack:
    """Parse an application ack (used by devices and the simulator)."""
    body = _json_object(payload)
    status = _str(body, "status", 16)
    if status not in ("accepted", "rejected"):
        raise ProtocolError("bad_value", "status must be accepted or rejected")
    msg_id = None if body.get("msg_id") is None and status == "rejected" else _id(body, "msg_id")
    return Ack(
        msg_id,
        "accepted" if status == "accepted" else "rejected",
        _opt_str(body, "reason", 200),
        _opt_str(body, "warning", 200),
    )
