"""Commands to devices over MQTT for central (rings, schedules): one service connection, QoS 1 on the
device's ``cmd`` topic. What is sent and recorded is ``care.commands``; this is only its broker port."""

from __future__ import annotations

import logging
import threading
import uuid

import paho.mqtt.client as paho

from messaging.mqtt import MqttConfig, make_client
from protocol.v1 import command_topic

__all__ = ["RingPublisher"]

log = logging.getLogger(__name__)


class RingPublisher:
    """Publish encoded commands; ``send`` is a ``care.commands.Publish``."""

    def __init__(self, cfg: MqttConfig) -> None:
        self._cfg = cfg
        self._client, _ = make_client(cfg, f"carealarm-calls-{uuid.uuid4().hex[:10]}")
        self._connected = threading.Event()
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect

    def start(self) -> None:
        self._client.connect_async(self._cfg.host, self._cfg.port, keepalive=30)
        self._client.loop_start()

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def send(self, device_id: str, payload: bytes) -> bool:
        """Queue a command for the device; False when the broker cannot be reached right now."""
        # A ring that waits for a broker to come back would ring long after the nurse gave up.
        if not self._connected.wait(timeout=2.0):
            return False
        info = self._client.publish(command_topic(device_id), payload, qos=1)
        return info.rc == paho.MQTT_ERR_SUCCESS

    def _on_connect(self, _c: paho.Client, _u: object, _f: object, reason: object, _p: object) -> None:
        if getattr(reason, "is_failure", False):
            log.error("calls: the broker refused the ring connection: %s", reason)
            return
        self._connected.set()

    def _on_disconnect(self, *_args: object) -> None:
        self._connected.clear()
