"""One MQTT connection of the gateway: a persistent session, manual acks, subscriptions restored."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

import paho.mqtt.client as paho

from messaging.mqtt import MqttConfig, make_client

__all__ = ["BrokerLink"]

log = logging.getLogger(__name__)

# How many un-acked QoS 1 messages the broker may have in flight to one link (MQTT 5 Receive Maximum).
_RECEIVE_MAXIMUM = 2000


class BrokerLink:
    """A paho client with a fixed client id and a persistent session (clean_start=False)."""

    def __init__(
        self,
        cfg: MqttConfig,
        client_id: str,
        topics: Sequence[str],
        on_message: Callable[[BrokerLink, paho.MQTTMessage], None],
    ) -> None:
        self.client_id = client_id
        self._cfg = cfg
        self._topics = list(topics)
        self._on_message_cb = on_message
        self.connected = threading.Event()
        # Set when the broker granted every subscription: connected but refused (an ACL, a broken session)
        # is as deaf as disconnected, and health must say so.
        self.subscribed = threading.Event()
        self.refused: str | None = None  # why the broker refused the last CONNECT or SUBSCRIBE
        self.stopping = False
        self._client, self._props = make_client(
            cfg, client_id, persistent=True, manual_ack=True, receive_maximum=_RECEIVE_MAXIMUM
        )
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = lambda _c, _u, msg: self._on_message_cb(self, msg)

    def start(self) -> None:
        # clean_start=False keeps the session: what was published while we were away is delivered now.
        self._client.connect_async(
            self._cfg.host, self._cfg.port, keepalive=30, clean_start=False, properties=self._props
        )
        self._client.loop_start()

    def stop(self) -> None:
        self.stopping = True
        self._client.disconnect()
        self._client.loop_stop()

    def ack(self, mid: int, qos: int) -> None:
        self._client.ack(mid, qos)

    def publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
        self._client.publish(topic, payload, qos=qos)

    def _on_connect(self, client: paho.Client, _u: object, flags: object, reason: object, _p: object) -> None:
        if getattr(reason, "is_failure", False):
            log.error("gateway link %s: broker refused the connection: %s", self.client_id, reason)
            self.refused = f"connection refused: {reason}"
            return
        # Subscribing again is harmless when the session kept the subscriptions, and needed when it did not.
        client.subscribe([(topic, 1) for topic in self._topics])
        log.info(
            "gateway link %s connected (session present: %s)",
            self.client_id,
            getattr(flags, "session_present", "?"),
        )
        self.connected.set()

    def _on_subscribe(self, _c: paho.Client, _u: object, _mid: int, codes: list[Any], _p: object) -> None:
        refused = [c for c in codes if getattr(c, "is_failure", False)]
        if refused:
            self.refused = f"subscription refused: {refused[0]}"
            self.subscribed.clear()
            log.error("gateway link %s: the broker refused a subscription (%s)", self.client_id, refused[0])
        else:
            self.refused = None
            self.subscribed.set()

    def _on_disconnect(self, _c: paho.Client, _u: object, _f: object, reason: object, _p: object) -> None:
        self.connected.clear()
        self.subscribed.clear()
        if not self.stopping:
            log.warning(
                "gateway link %s lost the broker (%s); reconnecting with backoff", self.client_id, reason
            )
