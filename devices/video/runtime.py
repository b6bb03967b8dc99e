"""Run a video endpoint as a device: its own MQTT connection for ring commands, its own event loop thread.

paho's network thread hands each ``ring`` command to the endpoint's loop with
``asyncio.run_coroutine_threadsafe``; the public methods here are thread-safe and blocking, for the
simulator, the tests and the command line.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import Callable, Coroutine
from concurrent.futures import Future
from typing import Any, TypeVar

import paho.mqtt.client as paho

from messaging.accounts import video_login
from messaging.mqtt import MqttConfig, make_client
from protocol.v1 import CommandAck, ProtocolError, Status, command_topic, decode_command, encode

from .endpoint import EndpointConfig, VideoEndpoint

__all__ = ["VideoDevice"]

log = logging.getLogger(__name__)

T = TypeVar("T")


class VideoDevice:
    """A video endpoint on its own loop thread, rung over MQTT with the device's own password.

    Its broker login is the tablet's second one, ``{id}/video``, tied to that client id (docs/protocol.md
    §1): the tablet's own connection (heartbeats, alarms) keeps the device id.
    """

    def __init__(
        self,
        config: EndpointConfig,
        broker: MqttConfig | None,
        on_event: Callable[[str, dict[str, Any]], None] | None = None,
    ) -> None:
        self.config = config
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"video-{config.device_id}")
        self._thread.daemon = True
        self.endpoint: VideoEndpoint = self._make(on_event)
        self.connected = threading.Event()
        self._client: paho.Client | None = None
        if broker is not None:
            login = video_login(config.device_id)
            cfg = MqttConfig(broker.host, broker.port, login, config.password, broker.tls, broker.ca_file)
            client, self._props = make_client(cfg, login)
            status_topic, offline = encode(Status(config.device_id, online=False))
            client.will_set(status_topic, offline, qos=1, retain=True)
            client.on_connect = self._on_connect
            client.on_message = self._on_message
            client.on_subscribe = self._on_subscribe
            self._client = client
            self._broker = cfg

    def _make(self, on_event: Callable[[str, dict[str, Any]], None] | None) -> VideoEndpoint:
        self._thread.start()

        async def build() -> VideoEndpoint:
            return VideoEndpoint(self.config, on_event)

        return asyncio.run_coroutine_threadsafe(build(), self._loop).result()

    def start(self) -> None:
        if self._client is not None:
            self._client.connect_async(self._broker.host, self._broker.port, keepalive=30)
            self._client.loop_start()

    def stop(self) -> None:
        try:
            self.run(self.endpoint.close(), timeout=10)
        finally:
            if self._client is not None:
                topic, offline = encode(Status(self.config.device_id, online=False))
                self._client.publish(topic, offline, qos=1, retain=True)
                self._client.disconnect()
                self._client.loop_stop()
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)
            self._loop.close()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 15.0) -> T:
        """Run a coroutine on the endpoint's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def submit(self, coro: Coroutine[Any, Any, T]) -> Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    # The buttons on the device.
    def answer(self) -> None:
        self.run(self.endpoint.answer())

    def decline(self) -> None:
        self.run(self.endpoint.decline())

    def hangup(self) -> None:
        self.run(self.endpoint.hangup())

    def call_care_station(self) -> None:
        self.run(self.endpoint.call_care_station())

    def _on_connect(self, client: paho.Client, _u: object, _f: object, reason: object, _p: object) -> None:
        if getattr(reason, "is_failure", False):
            log.error("video device %s: broker refused the connection: %s", self.config.device_id, reason)
            return
        client.subscribe(command_topic(self.config.device_id), qos=1)
        topic, online = encode(Status(self.config.device_id, online=True))
        client.publish(topic, online, qos=1, retain=True)

    def _on_subscribe(self, *_args: object) -> None:
        self.connected.set()

    def _on_message(self, client: paho.Client, _u: object, msg: paho.MQTTMessage) -> None:
        try:
            command = decode_command(bytes(msg.payload))
        except ProtocolError as exc:
            log.warning("video device %s: unreadable command: %s", self.config.device_id, exc)
            return
        if command.command != "ring":
            return  # reminders and schedules are for other devices
        token = command.arg("token")
        if not isinstance(token, str):
            log.warning("video device %s: a ring without a signalling token", self.config.device_id)
            self._answer(client, command.cmd_id, "refused", "a ring without a signalling token")
            return
        self.submit(self.endpoint.ring(command.arg("call_id"), token, command.arg("url")))
        self._answer(client, command.cmd_id, "done")  # settles the ring's command record at central

    def _answer(self, client: paho.Client, cmd_id: str, result: str, reason: str | None = None) -> None:
        ack = CommandAck(
            self.config.device_id, uuid.uuid4().hex, int(time.time() * 1000), cmd_id, result, reason
        )
        topic, payload = encode(ack)
        client.publish(topic, payload, qos=1)
