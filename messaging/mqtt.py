"""paho-mqtt behind a small seam: broker URLs, client construction and change hints between components.

Hints are QoS 0 wake-up calls ("there is something new in the database"); they carry no data, so a lost
hint only costs the poll interval, never an alarm.
"""

from __future__ import annotations

import logging
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from protocol.v1 import command_topic

__all__ = ["HINT_ALERTS", "HINT_EVENTS", "Hints", "MqttConfig", "make_client"]

log = logging.getLogger(__name__)

HINT_EVENTS = "carealarm/internal/hint/events"
HINT_ALERTS = "carealarm/internal/hint/alerts"


@dataclass(frozen=True)
class MqttConfig:
    host: str
    port: int
    username: str | None = None
    password: str | None = None
    tls: bool = False
    ca_file: str | None = None  # a private CA for the broker's certificate (None: the system's CAs)

    @classmethod
    def from_url(cls, url: str, ca_file: str | None = None) -> MqttConfig:
        """Parse ``mqtt://user:pass@host:port`` (or ``mqtts://`` for TLS)."""
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise ValueError(f"not an MQTT URL (mqtt://user:pass@host:port): scheme {parts.scheme!r}")
        tls = parts.scheme == "mqtts"
        return cls(
            host=parts.hostname,
            port=parts.port or (8883 if tls else 1883),
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            tls=tls,
            ca_file=ca_file if tls else None,
        )


def make_client(
    cfg: MqttConfig,
    client_id: str,
    *,
    persistent: bool = False,
    session_expiry_s: int = 7 * 24 * 3600,
    manual_ack: bool = False,
    receive_maximum: int | None = None,
) -> tuple[paho.Client, Properties | None]:
    """Build an MQTT 5 client and the CONNECT properties to pass to ``connect``.

    ``persistent`` keeps the broker session (and its queued QoS 1 messages) across disconnects and process
    restarts; callers must then connect with ``clean_start=False`` (paho's default wipes it once).
    """
    client = paho.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=paho.MQTTv5,
        manual_ack=manual_ack,
    )
    if cfg.username:
        client.username_pw_set(cfg.username, cfg.password)
    if cfg.tls:
        client.tls_set(ca_certs=cfg.ca_file, cert_reqs=ssl.CERT_REQUIRED)
    # Reconnect with backoff from 1 s up to 10 s after a broker restart or a network fault.
    client.reconnect_delay_set(min_delay=1, max_delay=10)
    props = None
    if persistent or receive_maximum:
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        if persistent:
            props.SessionExpiryInterval = session_expiry_s
        if receive_maximum:
            props.ReceiveMaximum = receive_maximum
    return client, props


class Hints:
    """Publish and receive change hints on one service connection."""

    def __init__(self, cfg: MqttConfig, client_id: str) -> None:
        self._client, _ = make_client(cfg, client_id)
        self._handlers: dict[str, list[Callable[[], None]]] = {}
        self._lock = threading.Lock()
        self._client.on_connect = self._on_connect
        self._client.on_message = self._on_message
        self._cfg = cfg

    def on(self, topic: str, handler: Callable[[], None]) -> None:
        """Call ``handler`` (from paho's thread) whenever a hint on ``topic`` arrives."""
        with self._lock:
            self._handlers.setdefault(topic, []).append(handler)

    def publish(self, topic: str) -> None:
        self._client.publish(topic, b"", qos=0)

    def publish_command(self, device_id: str, payload: bytes) -> bool:
        """Publish an encoded command to a device (QoS 1) on the same service connection; False when the
        client could not queue it (``care.commands.Publish``)."""
        info = self._client.publish(command_topic(device_id), payload, qos=1)
        return info.rc == paho.MQTT_ERR_SUCCESS

    def start(self) -> None:
        self._client.connect_async(self._cfg.host, self._cfg.port, keepalive=30)
        self._client.loop_start()

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def _on_connect(self, client: paho.Client, _u: object, _f: object, reason: object, _p: object) -> None:
        if getattr(reason, "is_failure", False):
            log.error("hint connection refused: %s", reason)
            return
        with self._lock:
            topics = list(self._handlers)
        for topic in topics:
            client.subscribe(topic, qos=0)

    def _on_message(self, _c: paho.Client, _u: object, msg: paho.MQTTMessage) -> None:
        with self._lock:
            handlers = list(self._handlers.get(msg.topic, ()))
        for handler in handlers:
            handler()
