"""The fleet simulator: its asyncio MQTT client against the real embedded Mosquitto, and its scenarios."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from carealarm.broker import EmbeddedBroker
from devices.simulator.device import Credentials, SimDevice
from devices.simulator.mqtt import (
    MQTT_5,
    MQTT_311,
    ConnectRefused,
    MqttClient,
    Will,
    decode_remaining_length,
    encode_packet,
)
from devices.simulator.scenarios import SCENARIOS, clock_offset_ms, is_flaky, timeline
from messaging.accounts import mosquitto_hash
from messaging.mqtt import MqttConfig

ROOT = "carealarm/v1/devices"


async def _until(predicate: Callable[[], object], timeout: float = 10.0) -> None:
    """Wait for a condition (a bound for a broken run, never a performance assertion)."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.02)


def _run(coro: Awaitable[Any]) -> Any:
    return asyncio.run(coro)  # type: ignore[arg-type]


@pytest.fixture
def devices(embedded_broker: EmbeddedBroker) -> list[Credentials]:
    """Two devices the embedded broker knows (their own passwords, the generated ACL)."""
    creds = [Credentials(f"sim-{i}", f"pw-{i}-secret", "alarm_button") for i in range(2)]
    embedded_broker.reload([(c.device_id, mosquitto_hash(c.password)) for c in creds])
    return creds


async def _service(broker: EmbeddedBroker, topic: str, got: list[tuple[str, bytes, bool]]) -> MqttClient:
    cfg = MqttConfig.from_url(broker.url)
    client = MqttClient(
        "test-service",
        username=cfg.username,
        password=cfg.password,
        on_message=lambda t, p, _q, r: got.append((t, p, r)),
    )
    await client.connect(cfg.host, cfg.port)
    await client.subscribe([(topic, 1)])
    return client


async def _wait_reload(broker: EmbeddedBroker, creds: Credentials) -> MqttClient:
    """Connect once the broker has re-read its password file (SIGHUP is asynchronous)."""
    for _ in range(50):
        client = MqttClient(creds.device_id, username=creds.device_id, password=creds.password)
        try:
            await client.connect("127.0.0.1", broker.port)
            return client
        except ConnectRefused:
            await asyncio.sleep(0.1)
    raise AssertionError("the broker never accepted the device")


def test_remaining_length_round_trip() -> None:
    """The variable-length integer of the fixed header reads back what was written, at every boundary."""
    for n in (0, 1, 127, 128, 16_383, 16_384, 2_097_151, 2_097_152, 268_435_455):
        packet = encode_packet(0x30, b"\x00" * n)
        assert decode_remaining_length(packet, 1) == (n, len(packet) - 1 - n)


@pytest.mark.parametrize("protocol", [MQTT_311, MQTT_5])
def test_publish_qos1_with_device_credentials(
    embedded_broker: EmbeddedBroker, devices: list[Credentials], protocol: int
) -> None:
    """A device publishes at QoS 1 with its own credentials; the PUBACK arrives and the service gets it."""

    async def go() -> None:
        got: list[tuple[str, bytes, bool]] = []
        service = await _service(embedded_broker, f"{ROOT}/+/alarm", got)
        await _wait_reload(embedded_broker, devices[0])
        device = MqttClient(
            devices[0].device_id,
            username=devices[0].device_id,
            password=devices[0].password,
            protocol=protocol,
        )
        await device.connect("127.0.0.1", embedded_broker.port)
        code = await device.publish(f"{ROOT}/sim-0/alarm", b'{"msg_id":"m1","ts":1}', qos=1)
        assert code == 0
        await _until(lambda: got)
        assert got == [(f"{ROOT}/sim-0/alarm", b'{"msg_id":"m1","ts":1}', False)]
        await device.disconnect()
        await service.disconnect()

    _run(go())


def test_wrong_password_is_refused(embedded_broker: EmbeddedBroker, devices: list[Credentials]) -> None:
    """CONNECT with a wrong password raises ConnectRefused with the broker's code."""

    async def go() -> None:
        await (await _wait_reload(embedded_broker, devices[0])).disconnect()
        client = MqttClient("sim-0", username="sim-0", password="wrong")
        with pytest.raises(ConnectRefused) as info:
            await client.connect("127.0.0.1", embedded_broker.port)
        assert info.value.code in (4, 5)  # bad user name or password / not authorised

    _run(go())


def test_dropped_connection_publishes_the_will(
    embedded_broker: EmbeddedBroker, devices: list[Credentials]
) -> None:
    """A connection dropped without DISCONNECT makes the broker publish the retained Last Will."""

    async def go() -> None:
        got: list[tuple[str, bytes, bool]] = []
        service = await _service(embedded_broker, f"{ROOT}/+/status", got)
        await (await _wait_reload(embedded_broker, devices[1])).disconnect()
        device = MqttClient(
            "sim-1",
            username="sim-1",
            password=devices[1].password,
            will=Will(f"{ROOT}/sim-1/status", b"offline"),
        )
        await device.connect("127.0.0.1", embedded_broker.port)
        device.abort()
        await _until(lambda: got)
        assert got[0][:2] == (f"{ROOT}/sim-1/status", b"offline")
        await service.disconnect()

    _run(go())


def test_keepalive_pings_hold_the_connection_and_a_freeze_fires_the_will(
    embedded_broker: EmbeddedBroker, devices: list[Credentials]
) -> None:
    """With a 1 s keep-alive the client's PINGREQs keep it connected; once frozen, the Will follows."""

    async def go() -> None:
        got: list[tuple[str, bytes, bool]] = []
        service = await _service(embedded_broker, f"{ROOT}/+/status", got)
        await (await _wait_reload(embedded_broker, devices[0])).disconnect()
        device = MqttClient(
            "sim-0",
            username="sim-0",
            password=devices[0].password,
            keepalive_s=1,
            will=Will(f"{ROOT}/sim-0/status", b"offline"),
        )
        await device.connect("127.0.0.1", embedded_broker.port)
        await asyncio.sleep(2.5)  # more than 1.5 x keep-alive without any PUBLISH
        assert device.connected and not got
        device.freeze()
        await _until(lambda: got)
        assert got[0][1] == b"offline"
        device.abort()
        await service.disconnect()

    _run(go())


def test_sim_device_resends_until_acked_and_after_a_reconnect(
    embedded_broker: EmbeddedBroker, devices: list[Credentials]
) -> None:
    """A SimDevice says online, keeps an alarm pending until its ack, and resends it after a drop."""

    async def go() -> None:
        got: list[tuple[str, bytes, bool]] = []
        service = await _service(embedded_broker, f"{ROOT}/+/+", got)
        await (await _wait_reload(embedded_broker, devices[0])).disconnect()
        device = SimDevice(devices[0], MqttConfig("127.0.0.1", embedded_broker.port))
        device.start()
        await _until(lambda: device.connected)
        await _until(lambda: (f"{ROOT}/sim-0/status", b"online", False) in got)
        msg_id = device.press_alarm("fall")
        await _until(lambda: any(t.endswith("/alarm") for t, _p, _r in got))
        assert device.pending() == 1
        device.drop(0.1)  # the network goes; the device comes back by itself and resends at once
        await _until(lambda: sum(t.endswith("/alarm") for t, _p, _r in got) >= 2, timeout=20)
        alarms = [json.loads(p) for t, p, _r in got if t.endswith("/alarm")]
        assert {a["msg_id"] for a in alarms} == {msg_id}
        service.publish(f"{ROOT}/sim-0/ack", json.dumps({"msg_id": msg_id, "status": "accepted"}).encode(), 1)
        await _until(lambda: device.pending() == 0)
        assert device.stats.acked == 1
        await device.stop()
        await service.disconnect()

    _run(go())


# The rate scenarios (a scripted one, care-day, has its own plan: tests/test_simulator_protocol.py).
RATE_SCENARIOS = sorted(name for name, s in SCENARIOS.items() if s.script is None)


def _first(name: str, seed: int, n: int = 3000) -> list[object]:
    kinds = ["alarm_button", "dispenser", "alarm_button"] * 10
    return list(itertools.islice(timeline(SCENARIOS[name], kinds, seed), n))


@pytest.mark.parametrize("name", RATE_SCENARIOS)
def test_scenarios_are_repeatable(name: str) -> None:
    """The same scenario and seed give the same timeline; another seed gives another one."""
    assert _first(name, 42) == _first(name, 42)
    assert _first(name, 42) != _first(name, 43)


@pytest.mark.parametrize("name", RATE_SCENARIOS)
def test_timeline_is_in_time_order(name: str) -> None:
    """Actions come out in time order (the runner plays them one after another)."""
    times = [a.at_s for a in _first(name, 1)]  # type: ignore[attr-defined]
    assert times == sorted(times)


def test_demo_presses_the_first_alarm_five_seconds_after_the_start() -> None:
    """Scenario demo presses one alarm at 5 s, on an alarm button (what `make demo` shows at once)."""
    kinds = ["alarm_button", "dispenser"] * 3
    first = next(a for a in timeline(SCENARIOS["demo"], kinds, 1) if a.what == "alarm")
    assert first.at_s == 5.0 and kinds[first.device] == "alarm_button"


def test_realistic_has_every_behaviour() -> None:
    """Scenario realistic has late and missed doses, cancels, drops, freezes, skewed clocks, flaky links."""
    kinds = ["alarm_button", "dispenser"] * 100
    actions = list(itertools.takewhile(lambda a: a.at_s < 1800, timeline(SCENARIOS["realistic"], kinds, 3)))
    assert {a.what for a in actions} >= {
        "heartbeat",
        "alarm",
        "cancel",
        "dose_due",
        "dose_taken",
        "dose_missed",
        "drop",
        "freeze",
    }
    # every dose outcome follows its own due
    due = {a.arg: a.at_s for a in actions if a.what == "dose_due"}
    assert all(due[a.arg] <= a.at_s for a in actions if a.what in ("dose_taken", "dose_missed"))
    offsets = {clock_offset_ms(SCENARIOS["realistic"], 3, i) for i in range(200)}
    assert len(offsets) > 100 and max(abs(o) for o in offsets) <= 90_000
    assert 0 < sum(is_flaky(SCENARIOS["realistic"], 3, i) for i in range(200)) < 40
