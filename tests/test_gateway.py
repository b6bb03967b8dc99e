"""The gateway against real brokers (embedded, system Mosquitto) and real databases (SQLite, PostgreSQL)."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import MqttProbe, forget_session, free_port, service_config, wait_for
from sqlalchemy import func, select

from carealarm.broker import EmbeddedBroker
from gateway.service import Gateway
from messaging.accounts import mosquitto_hash
from messaging.mqtt import MqttConfig
from storage.db import SessionFactory
from storage.models import DeadLetter, Device, DeviceEvent
from storage.registry import add_client, add_device

NOW = int(time.time() * 1000)  # device clocks in these tests are right


@dataclass
class BrokerEnv:
    kind: str
    service: MqttConfig
    device_cfg: Callable[[str, str], MqttConfig]
    allow: Callable[[list[tuple[str, str]]], None]  # make device credentials known to the broker


@pytest.fixture(params=["embedded", "system"])
def broker_env(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BrokerEnv]:
    if request.param == "system":
        cfg: MqttConfig = request.getfixturevalue("system_broker")
        yield BrokerEnv("system", cfg, lambda _d, _p: cfg, lambda _creds: None)
        return
    broker = EmbeddedBroker(tmp_path / "broker", free_port())
    broker.start([])

    def allow(creds: list[tuple[str, str]]) -> None:
        broker.reload([(d, mosquitto_hash(p)) for d, p in creds])
        time.sleep(0.3)  # Mosquitto re-reads its files on SIGHUP, asynchronously

    try:
        yield BrokerEnv(
            "embedded", service_config(broker), lambda d, p: MqttConfig("127.0.0.1", broker.port, d, p), allow
        )
    finally:
        broker.stop()


@dataclass
class Stack:
    env: BrokerEnv
    sessions: SessionFactory
    device_id: str
    password: str
    gateway: Gateway
    name: str

    def publish(
        self, kind: str, payload: bytes | str, device_id: str | None = None, retain: bool = False
    ) -> None:
        """Publish as the device with mosquitto_pub (a client nobody here wrote), QoS 1."""
        device_id = device_id or self.device_id
        cfg = self.env.device_cfg(device_id, self.password)
        topic = f"carealarm/v1/devices/{device_id}/{kind}"
        text = payload if isinstance(payload, str) else payload.decode("latin-1")
        cmd = ["mosquitto_pub", "-h", cfg.host, "-p", str(cfg.port), "-q", "1", "-t", topic]
        cmd += ["-i", f"pub-{uuid.uuid4().hex[:8]}"]
        cmd += ["-m", text] if text else ["-n"]  # -n: an empty message (clears a retained one)
        if cfg.username:
            cmd += ["-u", cfg.username, "-P", cfg.password or ""]
        if retain:
            cmd.append("-r")
        subprocess.run(cmd, check=True, timeout=10)

    def restart_gateway(self) -> None:
        self.gateway.stop()
        self.gateway = Gateway(
            mqtt=self.env.service, sessions=self.sessions, name=self.name, liveness_flush_s=0.5
        )
        self.gateway.start()
        assert self.gateway.wait_connected(10)

    def device(self) -> Device:
        with self.sessions() as s:
            device = s.get(Device, self.device_id)
            assert device is not None
            return device

    def events(self) -> list[DeviceEvent]:
        with self.sessions() as s:
            return list(s.scalars(select(DeviceEvent).where(DeviceEvent.device_id == self.device_id)))

    def dead_letters(self) -> list[DeadLetter]:
        with self.sessions() as s:
            return list(s.scalars(select(DeadLetter).where(DeadLetter.topic.like(f"%/{self.device_id}%/%"))))

    def ack_probe(self) -> MqttProbe:
        probe = MqttProbe(self.env.service)
        assert probe.connected()
        probe.subscribe(f"carealarm/v1/devices/{self.device_id}/ack")
        return probe


@pytest.fixture
def stack(broker_env: BrokerEnv, sessions: SessionFactory) -> Iterator[Stack]:
    run = uuid.uuid4().hex[:8]
    device_id, password = f"btn-{run}", f"pw-{run}"
    with sessions.begin() as s:
        client = add_client(s, name="Dhr. Test", now_ms=NOW)
        add_device(
            s, device_id=device_id, client_id=client.id, kind="alarm_button", now_ms=NOW, password=password
        )
    broker_env.allow([(device_id, password)])
    name = f"test-{run}"
    gateway = Gateway(mqtt=broker_env.service, sessions=sessions, name=name, liveness_flush_s=0.5)
    gateway.start()
    assert gateway.wait_connected(10), "gateway did not connect"
    time.sleep(0.2)  # let the SUBSCRIBE land
    st = Stack(broker_env, sessions, device_id, password, gateway, name)
    try:
        yield st
    finally:
        st.gateway.stop()
        if broker_env.kind == "system":
            for role in ("alarms", "bulk"):
                forget_session(broker_env.service, f"carealarm-gateway-{name}-{role}")
            st.publish("status", "", retain=True)  # clear our retained status from the shared broker


def _alarm(msg_id: str) -> str:
    return json.dumps({"msg_id": msg_id, "ts": NOW, "alarm_kind": "pendant"})


def test_alarm_is_stored_then_acknowledged(stack: Stack) -> None:
    """An alarm from mosquitto_pub is stored once and the device receives an 'accepted' application ack."""
    probe = stack.ack_probe()
    try:
        stack.publish("alarm", _alarm("a-1"))
        topic, payload, _ = probe.next(timeout=10)
        assert json.loads(payload) == {"msg_id": "a-1", "status": "accepted"}
        events = stack.events()
        assert [(e.msg_id, e.kind, e.device_ts_ms) for e in events] == [("a-1", "alarm", NOW)]
        assert json.loads(events[0].payload)["alarm_kind"] == "pendant"
    finally:
        probe.close()


def test_resent_alarm_is_stored_once_and_acked_each_time(stack: Stack) -> None:
    """A device that did not hear the ack resends: the copy is acknowledged again but not stored twice."""
    probe = stack.ack_probe()
    try:
        stack.publish("alarm", _alarm("a-2"))
        stack.publish("alarm", _alarm("a-2"))
        acks = [json.loads(probe.next(timeout=10)[1]) for _ in range(2)]
        assert acks == [{"msg_id": "a-2", "status": "accepted"}] * 2
        assert len(stack.events()) == 1
        assert stack.gateway.metrics.duplicates >= 1
    finally:
        probe.close()


def test_malformed_and_unknown_are_refused_and_the_gateway_keeps_going(stack: Stack) -> None:
    """Bad JSON and an unknown device are dead-lettered, counted and nacked; the next alarm still gets in."""
    probe = stack.ack_probe()
    try:
        stack.publish("alarm", '{"msg_id":"bad-1","ts":')
        nack = json.loads(probe.next(timeout=10)[1])
        # Too broken to read its msg_id: the device is still told what was wrong.
        assert nack == {"msg_id": None, "status": "rejected", "reason": "bad_json"}
        stack.publish("alarm", '{"msg_id":"bad-2","ts":"noon"}')
        assert json.loads(probe.next(timeout=10)[1])["reason"] == "bad_type"
        stack.publish("alarm", _alarm("good-1"))
        assert json.loads(probe.next(timeout=10)[1]) == {"msg_id": "good-1", "status": "accepted"}
    finally:
        probe.close()
    letters = stack.dead_letters()
    assert sorted(d.reason for d in letters) == ["bad_json", "bad_type"]
    assert any(d.payload == b'{"msg_id":"bad-1","ts":' for d in letters)
    assert stack.gateway.metrics.rejected["bad_json"] >= 1
    assert [e.msg_id for e in stack.events()] == ["good-1"]
    if stack.env.kind == "system":  # the embedded broker would refuse an unregistered device at CONNECT
        stranger = f"ghost-{uuid.uuid4().hex[:6]}"
        stack.publish("alarm", _alarm("g-1"), device_id=stranger)
        wait_for(lambda: _dead_letter_for(stack.sessions, stranger), 10, what="unknown-device dead letter")
        assert "unknown_device" in stack.gateway.metrics.rejected
    assert "carealarm_gateway_messages_rejected_total" in stack.gateway.metrics.render()


def _dead_letter_for(sessions: SessionFactory, device_id: str) -> bool:
    with sessions() as s:
        return bool(
            s.scalar(select(func.count()).select_from(DeadLetter).where(DeadLetter.device_id == device_id))
        )


def test_alarms_sent_while_the_gateway_is_down_arrive_after_restart(stack: Stack) -> None:
    """The gateway's persistent session keeps QoS 1 alarms queued at the broker while it is stopped."""
    stack.gateway.stop()
    for i in range(5):
        stack.publish("alarm", _alarm(f"away-{i}"))
    assert stack.events() == []
    stack.restart_gateway()
    wait_for(lambda: len(stack.events()) == 5, 15, what="the 5 queued alarms to be stored")
    assert sorted(e.msg_id for e in stack.events()) == [f"away-{i}" for i in range(5)]


def test_heartbeats_update_liveness_in_batches(stack: Stack) -> None:
    """Heartbeats are not events; last-seen, battery and interval reach the device row in batches."""
    stack.publish(
        "heartbeat",
        json.dumps(
            {
                "msg_id": "h1",
                "ts": int(time.time() * 1000),
                "battery": 37,
                "interval_s": 60,
                "firmware": "2.1",
            }
        ),
    )
    stack.publish("status", "online")
    wait_for(
        lambda: stack.device().battery == 37 and stack.device().online is True, 10, what="the liveness flush"
    )
    assert stack.device().last_seen_ms is not None
    # The heartbeat is not an event; the live status report is stored once, for the monitor.
    assert [e.kind for e in stack.events()] == ["status"]


def test_retained_status_replay_is_not_a_sign_of_life(stack: Stack) -> None:
    """After a gateway restart the broker replays the retained status; it must not refresh last-seen."""
    stack.publish("status", "online", retain=True)
    wait_for(lambda: stack.device().online is True, 10, what="the retained status to be recorded")
    seen = stack.device().last_seen_ms
    time.sleep(0.1)
    stack.restart_gateway()
    wait_for(lambda: stack.gateway.metrics.received["status"] >= 1, 10, what="the retained status replay")
    time.sleep(1.2)  # two flush intervals
    assert stack.device().last_seen_ms == seen
    assert stack.device().online is True
