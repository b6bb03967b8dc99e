"""Small helpers shared by the tests (not fixtures)."""

from __future__ import annotations

import random
import socket
import time
from collections.abc import Callable
from pathlib import Path

from carealarm.broker import EmbeddedBroker
from messaging.mqtt import MqttConfig

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
# The flags this closed network needs: without the background-networking ones Chromium keeps trying to
# reach Google's hosts. --headless is added by playwright.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def free_port() -> int:
    """A port free now, chosen below the kernel's ephemeral range: ports handed out by bind(0) come from
    that range, and an outgoing connection can take one between our check and the server's bind."""
    low = 20_000
    try:
        low_ephemeral = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low_ephemeral = 32_768
    for _ in range(200):
        port = random.randrange(low, max(low + 1000, low_ephemeral))
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port found")


def service_config(broker: EmbeddedBroker) -> MqttConfig:
    return MqttConfig.from_url(broker.url)


def wait_for(
    predicate: Callable[[], object], timeout: float = 10.0, interval: float = 0.05, what: str = "condition"
) -> None:
    """Poll ``predicate`` until it is truthy; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def forget_session(cfg: MqttConfig, client_id: str) -> None:
    """Drop a persistent session from a shared broker (clean start, expiry 0): leave it as we found it."""
    from messaging.mqtt import make_client

    client, _ = make_client(cfg, client_id)
    client.connect(cfg.host, cfg.port, clean_start=True)
    client.loop_start()
    time.sleep(0.2)
    client.disconnect()
    client.loop_stop()


class MqttProbe:
    """A test MQTT client that records what it receives (its own connection, paho's thread)."""

    def __init__(self, cfg: MqttConfig, client_id: str | None = None) -> None:
        import queue
        import uuid

        import paho.mqtt.client as paho

        from messaging.mqtt import make_client

        self.messages: queue.Queue[tuple[str, bytes, bool]] = queue.Queue()
        self.connect_reason: object = None
        self.suback: list[int] = []
        self._connected = __import__("threading").Event()
        self.client, _ = make_client(cfg, client_id or f"probe-{uuid.uuid4().hex[:8]}")

        def on_connect(_c: paho.Client, _u: object, _f: object, reason: object, _p: object) -> None:
            self.connect_reason = reason
            self._connected.set()

        def on_message(_c: paho.Client, _u: object, msg: paho.MQTTMessage) -> None:
            self.messages.put((msg.topic, bytes(msg.payload), bool(msg.retain)))

        def on_subscribe(_c: paho.Client, _u: object, _mid: int, codes: list[object], _p: object) -> None:
            self.suback.extend(int(getattr(c, "value", c)) for c in codes)  # type: ignore[call-overload]

        self.client.on_connect = on_connect
        self.client.on_message = on_message
        self.client.on_subscribe = on_subscribe
        self.client.connect_async(cfg.host, cfg.port, keepalive=30)
        self.client.loop_start()

    def connected(self, timeout: float = 5.0) -> bool:
        """Wait for the CONNACK; True when the broker accepted us."""
        if not self._connected.wait(timeout):
            return False
        return not getattr(self.connect_reason, "is_failure", True)

    def subscribe(self, topic: str, qos: int = 1) -> None:
        before = len(self.suback)
        self.client.subscribe(topic, qos)
        wait_for(lambda: len(self.suback) > before, 5, what=f"SUBACK for {topic}")

    def next(self, timeout: float = 5.0) -> tuple[str, bytes, bool]:
        return self.messages.get(timeout=timeout)

    def drain(self, settle: float = 0.3) -> list[tuple[str, bytes, bool]]:
        time.sleep(settle)
        out = []
        while not self.messages.empty():
            out.append(self.messages.get_nowait())
        return out

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def wait_in_page(page: object, expression: str, timeout: float = 30.0) -> None:
    """Poll a JavaScript expression in the page until it is truthy. Playwright's ``wait_for_function``
    compiles its string with ``new Function``, which the console's Content-Security-Policy (no
    ``unsafe-eval``) refuses; ``evaluate`` runs through the debugging protocol, outside the page's policy."""
    wait_for(lambda: page.evaluate(expression), timeout, what=expression)  # type: ignore[attr-defined]
