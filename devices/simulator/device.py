"""One simulated device: connects with its own credentials, leaves a Last Will, resends events until acked."""

from __future__ import annotations

import itertools
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import paho.mqtt.client as paho

from carealarm.mqtt import MqttConfig, make_client
from protocol.v1 import (
    Alarm,
    DoseEvent,
    Heartbeat,
    ProtocolError,
    Status,
    ack_topic,
    command_topic,
    decode_ack,
    encode,
    topic_for,
)

__all__ = ["Credentials", "SimDevice"]

log = logging.getLogger(__name__)

# A real device resends an unacknowledged event after a few seconds, and keeps doing so.
RESEND_AFTER_S = 5.0


@dataclass(frozen=True)
class Credentials:
    device_id: str
    password: str
    kind: str
    client_name: str = ""


@dataclass
class _Pending:
    topic: str
    payload: bytes
    first_sent: float
    last_sent: float
    attempts: int = 1


@dataclass
class SimDevice:
    """A device on its own MQTT connection (paho's thread); thread-safe public methods."""

    creds: Credentials
    broker: MqttConfig
    clock_ms: Callable[[], int] = field(default=lambda: int(time.time() * 1000))
    on_acked: Callable[[str, float], None] | None = None  # (msg_id, seconds from first send to ack)

    def __post_init__(self) -> None:
        cfg = MqttConfig(
            self.broker.host, self.broker.port, self.creds.device_id, self.creds.password, self.broker.tls
        )
        self._client, self._props = make_client(
            cfg, self.creds.device_id, persistent=True, session_expiry_s=3600
        )
        status_topic, offline = encode(Status(self.creds.device_id, online=False))
        self._client.will_set(status_topic, offline, qos=1, retain=True)
        self._client.on_connect = self._on_connect
        self._client.on_message = self._on_message
        self._pending: dict[str, _Pending] = {}
        self._lock = threading.Lock()
        self._seq = itertools.count(1)
        self._boot = uuid.uuid4().hex[:8]
        self.connected = threading.Event()
        self.rejected: list[tuple[str, str | None]] = []

    def start(self) -> None:
        self._client.connect_async(
            self.broker.host, self.broker.port, keepalive=30, clean_start=False, properties=self._props
        )
        self._client.loop_start()

    def stop(self, *, graceful: bool = True) -> None:
        if graceful:
            topic, online = encode(Status(self.creds.device_id, online=False))
            self._client.publish(topic, online, qos=1, retain=True)
        self._client.disconnect()
        self._client.loop_stop()

    def _next_msg_id(self) -> str:
        return f"{self._boot}-{next(self._seq)}"

    def heartbeat(self, battery: int | None = None, interval_s: int = 30) -> None:
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
        self._client.publish(topic, payload, qos=1)

    def press_alarm(self, alarm_kind: str = "button") -> str:
        """Press the alarm button; the alarm is resent until the service acknowledges it."""
        return self._send_event(Alarm(self.creds.device_id, self._next_msg_id(), self.clock_ms(), alarm_kind))

    def dose_event(self, event: str, dose_id: str, due_ts: int | None = None) -> str:
        return self._send_event(
            DoseEvent(self.creds.device_id, self._next_msg_id(), self.clock_ms(), event, dose_id, due_ts)
        )

    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    def resend_due(self, now: float | None = None) -> int:
        """Resend every event not acknowledged within RESEND_AFTER_S; return how many were resent."""
        now = time.monotonic() if now is None else now
        with self._lock:
            due = [(mid, p) for mid, p in self._pending.items() if now - p.last_sent >= RESEND_AFTER_S]
            for _mid, p in due:
                p.last_sent = now
                p.attempts += 1
        for _mid, p in due:
            self._client.publish(p.topic, p.payload, qos=1)
        return len(due)

    def _send_event(self, message: Alarm | DoseEvent) -> str:
        topic, payload = encode(message)
        now = time.monotonic()
        with self._lock:
            self._pending[message.msg_id] = _Pending(topic, payload, now, now)
        self._client.publish(topic, payload, qos=1)
        return message.msg_id

    def _on_connect(self, client: paho.Client, _u: object, _f: object, reason: object, _p: object) -> None:
        if getattr(reason, "is_failure", False):
            log.error("device %s: broker refused the connection: %s", self.creds.device_id, reason)
            return
        client.subscribe([(ack_topic(self.creds.device_id), 1), (command_topic(self.creds.device_id), 1)])
        topic, online = encode(Status(self.creds.device_id, online=True))
        client.publish(topic, online, qos=1, retain=True)
        self.connected.set()
        # Anything still unacknowledged goes again at once after a reconnect.
        self.resend_due(now=time.monotonic() + RESEND_AFTER_S)

    def _on_message(self, _c: paho.Client, _u: object, msg: paho.MQTTMessage) -> None:
        if msg.topic != topic_for(self.creds.device_id, "ack"):
            return  # commands arrive in a later protocol step
        try:
            ack = decode_ack(bytes(msg.payload))
        except ProtocolError:
            log.warning("device %s: unreadable ack", self.creds.device_id)
            return
        if ack.msg_id is None:  # a rejection of something too broken to name; we never send such things
            log.warning(
                "device %s: the service rejected an unreadable message: %s", self.creds.device_id, ack.reason
            )
            return
        with self._lock:
            pending = self._pending.pop(ack.msg_id, None)
        if ack.status == "rejected":
            self.rejected.append((ack.msg_id, ack.reason))
            log.warning("device %s: message %s rejected: %s", self.creds.device_id, ack.msg_id, ack.reason)
        elif pending is not None and self.on_acked is not None:
            self.on_acked(ack.msg_id, time.monotonic() - pending.first_sent)
