"""One simulated device: its own credentials and Last Will, events resent until the service acks them.

A :class:`SimDevice` lives on the asyncio loop (one :class:`~devices.simulator.mqtt.MqttClient`, one
small task that keeps it connected), so a process holds thousands of them. What it does follows
``docs/protocol.md``: on every (re)connect it subscribes to its ``ack`` and ``cmd`` topics, publishes
``online`` (retained), then resends every unacknowledged event; an event is resent every
:data:`RESEND_AFTER_S` until its application ack arrives. Every command it can read is answered with one
``cmdack`` event (what it answers is the table in ``commands.py``); a ``set_schedule`` is followed by a
``schedule`` report.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
import ssl
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from messaging.mqtt import MqttConfig
from protocol.v1 import (
    Alarm,
    AlarmCancel,
    CommandAck,
    DispenserEvent,
    DoseEvent,
    EventMessage,
    Fault,
    Heartbeat,
    ProtocolError,
    ScheduleReport,
    Status,
    ack_topic,
    command_topic,
    decode_ack,
    decode_command,
    encode,
)

from .commands import Response, Schedule, readable_cmd_id, respond
from .mqtt import MQTT_5, MqttClient, MqttError, Will

__all__ = ["RESEND_AFTER_S", "Credentials", "FleetStats", "SimDevice"]

log = logging.getLogger(__name__)

# A real device resends an unacknowledged event after a few seconds, and keeps doing so.
RESEND_AFTER_S = 5.0
# After a lost connection a device waits a little (with jitter, so a fleet does not reconnect in lockstep).
_RECONNECT_S = (1.0, 5.0)
# QoS 1 may deliver a command twice: a device remembers this many recent answers to repeat them.
_REMEMBERED_COMMANDS: Final = 64


@dataclass(frozen=True)
class Credentials:
    device_id: str
    password: str
    kind: str
    client_name: str = ""


@dataclass
class FleetStats:
    """What a fleet did so far (updated by its devices; read by the progress display and the bench)."""

    devices: int = 0
    connected: int = 0
    connects: int = 0
    connect_failures: int = 0
    heartbeats: int = 0
    alarms: int = 0
    cancels: int = 0
    doses: int = 0
    faults: int = 0
    dispenser_events: int = 0
    commands: int = 0  # commands answered with a cmdack
    acked: int = 0
    resent: int = 0
    acks_lost: int = 0  # application acks a flaky link "lost" on purpose
    rejected: int = 0
    drops: int = 0
    freezes: int = 0
    # Seconds from the first send of an event to its application ack, per event kind.
    ack_seconds: dict[str, list[float]] = field(default_factory=dict)


@dataclass
class _Pending:
    kind: str
    topic: str
    payload: bytes
    first_sent: float
    last_sent: float
    attempts: int = 1


class SimDevice:
    """A device on its own MQTT connection, driven from the asyncio loop."""

    def __init__(
        self,
        creds: Credentials,
        broker: MqttConfig,
        *,
        clock_ms: Callable[[], int] | None = None,
        on_acked: Callable[[str, float], None] | None = None,
        stats: FleetStats | None = None,
        keepalive_s: int = 30,
        lose_ack_share: float = 0.0,
        seed: int = 0,
        connect_slots: asyncio.Semaphore | None = None,
    ) -> None:
        self.creds = creds
        self.broker = broker
        self.clock_ms = clock_ms or (lambda: int(time.time() * 1000))
        self.on_acked = on_acked
        self.stats = stats if stats is not None else FleetStats()
        self._lose_ack_share = lose_ack_share
        self._rng = random.Random(f"{seed}:{creds.device_id}:link")
        self._connect_slots = connect_slots
        status_topic, offline = encode(Status(creds.device_id, online=False))
        self.client = MqttClient(
            creds.device_id,
            username=creds.device_id,
            password=creds.password,
            will=Will(status_topic, offline, qos=1, retain=True),
            keepalive_s=keepalive_s,
            clean=False,
            session_expiry_s=3600,
            protocol=MQTT_5,
            on_message=self._on_message,
            on_lost=self._on_lost,
        )
        self._ack_topic = ack_topic(creds.device_id)
        self._cmd_topic = command_topic(creds.device_id)
        self._answers: OrderedDict[str, Response] = OrderedDict()
        self.schedule: Schedule | None = None  # a dispenser's, once the service has sent one
        self._pending: dict[str, _Pending] = {}
        self._seq = itertools.count(1)
        self._boot = uuid.uuid4().hex[:8]
        self._lost = asyncio.Event()
        self._offline_until = 0.0
        self._stopped = False
        self._task: asyncio.Task[None] | None = None
        self._thaw: asyncio.TimerHandle | None = None
        self.last_alarm: str | None = None
        self.rejected: list[tuple[str, str | None]] = []

    @property
    def connected(self) -> bool:
        return self.client.connected and not self.client.frozen

    # -- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> None:
        """Connect (and stay connected) in the background; needs a running loop."""
        self._task = asyncio.get_running_loop().create_task(
            self._keep_connected(), name=f"sim-{self.creds.device_id}"
        )

    async def stop(self, *, graceful: bool = True) -> None:
        """Say ``offline`` and DISCONNECT (graceful), or just vanish (the broker then sends the Will)."""
        self._stopped = True
        if self._thaw is not None:
            self._thaw.cancel()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if graceful and self.connected:
            topic, offline = encode(Status(self.creds.device_id, online=False))
            self.client.publish(topic, offline, qos=0, retain=True)
            await self.client.disconnect()
        else:
            self.client.abort()

    async def _keep_connected(self) -> None:
        first = True
        while not self._stopped:
            wait = self._offline_until - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            elif not first:
                await asyncio.sleep(self._rng.uniform(*_RECONNECT_S))
            first = False
            try:
                if self._connect_slots is not None:
                    async with self._connect_slots:
                        await self._connect()
                else:
                    await self._connect()
            except MqttError as exc:
                self.stats.connect_failures += 1
                log.debug("device %s: %s", self.creds.device_id, exc)
                continue
            self.stats.connects += 1
            self.stats.connected += 1
            self._lost.clear()
            await self._lost.wait()
            self.stats.connected -= 1

    async def _connect(self) -> None:
        context = ssl.create_default_context() if self.broker.tls else None
        await self.client.connect(self.broker.host, self.broker.port, ssl_context=context)
        device_id = self.creds.device_id
        await self.client.subscribe([(self._ack_topic, 1), (self._cmd_topic, 1)])
        topic, online = encode(Status(device_id, online=True))
        self.client.publish(topic, online, qos=1, retain=True)
        # Anything still unacknowledged goes again at once after a reconnect.
        self.resend_due(now=time.monotonic() + RESEND_AFTER_S)

    def _on_lost(self, _client: MqttClient, _exc: Exception | None) -> None:
        self._lost.set()

    # -- what a device does ------------------------------------------------------------------------
    def drop(self, for_s: float) -> None:
        """The network goes away for ``for_s`` seconds (no DISCONNECT: the broker publishes the Will)."""
        self.stats.drops += 1
        self._offline_until = time.monotonic() + for_s
        if self.client.connected:
            self.client.abort()
            self._lost.set()

    def freeze(self, for_s: float) -> None:
        """The device hangs for ``for_s`` seconds: the socket stays open and silent."""
        if not self.connected:
            return
        self.stats.freezes += 1
        self.client.freeze()
        self._thaw = asyncio.get_running_loop().call_later(for_s, self._unfreeze)

    def _unfreeze(self) -> None:
        self._thaw = None
        self.client.thaw()
        if self.client.connected:
            self.resend_due(now=time.monotonic() + RESEND_AFTER_S)

    def _next_msg_id(self) -> str:
        return f"{self._boot}-{next(self._seq)}"

    def heartbeat(self, battery: int | None = None, interval_s: int = 30) -> None:
        """Publish a heartbeat (a device that is offline or hung sends none)."""
        if not self.connected:
            return
        topic, payload = encode(
            Heartbeat(
                self.creds.device_id,
                self._next_msg_id(),
                self.clock_ms(),
                battery=battery,
                signal=-67,
                firmware="sim-1.0",
                interval_s=interval_s,
            )
        )
        self.client.publish(topic, payload, qos=1)
        self.stats.heartbeats += 1

    def press_alarm(self, alarm_kind: str = "button") -> str:
        """Press the alarm button; the alarm is resent until the service acknowledges it."""
        msg_id = self._send_event(
            Alarm(self.creds.device_id, self._next_msg_id(), self.clock_ms(), alarm_kind)
        )
        self.last_alarm = msg_id
        self.stats.alarms += 1
        return msg_id

    def cancel_alarm(self, alarm_msg_id: str | None = None) -> str | None:
        """Cancel the last alarm (the client pressed cancel within the pre-alarm window)."""
        cancels = alarm_msg_id or self.last_alarm
        if cancels is None:
            return None
        self.stats.cancels += 1
        return self._send_event(
            AlarmCancel(self.creds.device_id, self._next_msg_id(), self.clock_ms(), cancels)
        )

    def rewind_counter(self, msg_id: str) -> None:
        """Set the msg_id counter back so the next message reuses ``msg_id`` (a firmware bug to simulate).

        The service keys events on (device, msg_id): a different event under a used msg_id is what it must
        notice. ``msg_id`` must be one of this device's own (``{boot}-{n}``).
        """
        boot, _, number = msg_id.rpartition("-")
        if boot != self._boot or not number.isdigit():
            raise ValueError(f"{msg_id!r} is not a msg_id of this device ({self._boot}-N)")
        self._seq = itertools.count(int(number))

    def dose_event(self, event: str, dose_id: str, due_ts: int | None = None) -> str:
        self.stats.doses += event != "due"
        return self._send_event(
            DoseEvent(self.creds.device_id, self._next_msg_id(), self.clock_ms(), event, dose_id, due_ts)
        )

    def fault(self, fault: str, detail: str | None = None) -> str:
        """Report a fault or power event (power_lost, power_restored, hardware, ...)."""
        self.stats.faults += 1
        return self._send_event(
            Fault(self.creds.device_id, self._next_msg_id(), self.clock_ms(), fault, detail)
        )

    def dispenser_event(self, event: str, doses_left: int | None = None, detail: str | None = None) -> str:
        """Report the dispenser's own trouble (stock_low with doses_left, dispense_error, ...)."""
        self.stats.dispenser_events += 1
        return self._send_event(
            DispenserEvent(
                self.creds.device_id, self._next_msg_id(), self.clock_ms(), event, doses_left, detail
            )
        )

    def report_schedule(self) -> str | None:
        """Publish the schedule the dispenser holds (None when it holds none yet)."""
        if self.schedule is None:
            return None
        return self._send_event(
            ScheduleReport(
                self.creds.device_id,
                self._next_msg_id(),
                self.clock_ms(),
                self.schedule.version,
                self.schedule.doses,
            )
        )

    def pending(self) -> int:
        return len(self._pending)

    def resend_due(self, now: float | None = None) -> int:
        """Resend every event not acknowledged within RESEND_AFTER_S; return how many were resent."""
        if not self._pending or not self.connected:
            return 0
        now = time.monotonic() if now is None else now
        due = [p for p in self._pending.values() if now - p.last_sent >= RESEND_AFTER_S]
        for p in due:
            p.last_sent = time.monotonic()
            p.attempts += 1
            self.client.publish(p.topic, p.payload, qos=1)
        self.stats.resent += len(due)
        return len(due)

    def _send_event(self, message: EventMessage) -> str:
        topic, payload = encode(message)
        now = time.monotonic()
        self._pending[message.msg_id] = _Pending(topic.rsplit("/", 1)[1], topic, payload, now, now)
        if self.connected:
            self.client.publish(topic, payload, qos=1)
        return message.msg_id

    def _on_message(self, topic: str, payload: bytes, _qos: int, _retain: bool) -> None:
        if topic == self._cmd_topic:
            self._on_command(payload)
        elif topic == self._ack_topic:
            self._on_ack(payload)

    def _on_command(self, payload: bytes) -> None:
        """Answer a command with one cmdack; a repeated cmd_id gets the same answer and is not redone."""
        device_id = self.creds.device_id
        try:
            command = decode_command(payload)
        except ProtocolError as exc:
            cmd_id = readable_cmd_id(payload)
            if cmd_id is None:
                log.warning(
                    "device %s: a command without a readable cmd_id, not answered: %s", device_id, exc
                )
                return
            what, response = "invalid command", Response("refused", f"invalid command: {exc}"[:200])
        else:
            cmd_id, what = command.cmd_id, command.command
            previous = self._answers.get(cmd_id)
            if previous is not None:
                log.info(
                    "device %s: %s %s again: answered %s again", device_id, what, cmd_id, previous.result
                )
                self._ack_command(cmd_id, previous)
                return
            answer = respond(self.creds.kind, command)
            if answer is None:
                log.info("device %s: %s %s is the video endpoint's to answer", device_id, what, cmd_id)
                return
            response = answer
        self._answers[cmd_id] = response
        while len(self._answers) > _REMEMBERED_COMMANDS:
            self._answers.popitem(last=False)
        reason = f" ({response.reason})" if response.reason else ""
        log.info("device %s: %s %s -> %s%s", device_id, what, cmd_id, response.result, reason)
        self._ack_command(cmd_id, response)
        if response.schedule is not None:
            self.schedule = response.schedule
            self.report_schedule()

    def _ack_command(self, cmd_id: str, response: Response) -> None:
        self.stats.commands += 1
        self._send_event(
            CommandAck(
                self.creds.device_id,
                self._next_msg_id(),
                self.clock_ms(),
                cmd_id,
                response.result,
                response.reason,
            )
        )

    def _on_ack(self, payload: bytes) -> None:
        try:
            ack = decode_ack(payload)
        except ProtocolError:
            log.warning("device %s: unreadable ack", self.creds.device_id)
            return
        if ack.msg_id is None:  # a rejection of something too broken to name; we never send such things
            log.warning(
                "device %s: the service rejected an unreadable message: %s", self.creds.device_id, ack.reason
            )
            return
        if self._lose_ack_share and self._rng.random() < self._lose_ack_share:
            self.stats.acks_lost += 1  # the flaky link ate it: the device will resend
            return
        pending = self._pending.pop(ack.msg_id, None)
        if ack.status == "rejected":
            self.rejected.append((ack.msg_id, ack.reason))
            self.stats.rejected += 1
            log.warning("device %s: message %s rejected: %s", self.creds.device_id, ack.msg_id, ack.reason)
        elif pending is not None:
            seconds = time.monotonic() - pending.first_sent
            self.stats.acked += 1
            self.stats.ack_seconds.setdefault(pending.kind, []).append(seconds)
            if self.on_acked is not None:
                self.on_acked(ack.msg_id, seconds)
