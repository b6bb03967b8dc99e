"""The gateway when things go wrong: kill -9 mid-burst, a broker restart, a database outage, a heartbeat
flood, hostile devices, several gateways sharing the load, and devices on TLS. Each test prints what was
published and what was stored."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from helpers import MqttProbe, forget_session, free_port, service_config, wait_for
from proxy import TcpProxy
from sqlalchemy import func, select

from carealarm.broker import EmbeddedBroker, TlsListener
from gateway.ingest import Inbound
from gateway.service import Gateway
from messaging.accounts import mosquitto_hash
from messaging.mqtt import MqttConfig, make_client
from storage.db import SessionFactory, make_engine, make_session_factory, upgrade
from storage.models import DeadLetter, DeviceEvent
from storage.registry import add_client, add_device

DEVICES = 50


def now_ms() -> int:
    return int(time.time() * 1000)


def _register(sessions: SessionFactory, count: int = DEVICES, prefix: str = "dev") -> list[str]:
    ids = [f"{prefix}-{i:03d}" for i in range(count)]
    with sessions.begin() as s:
        client = add_client(s, name="Load Test", now_ms=now_ms())
        for device_id in ids:
            add_device(
                s, device_id=device_id, client_id=client.id, kind="dispenser", now_ms=now_ms(), password="x"
            )
    return ids


class Publisher:
    """Publishes QoS 1 messages on device topics (as the service user) and waits for every PUBACK."""

    def __init__(self, cfg: MqttConfig) -> None:
        self.client, _ = make_client(cfg, f"load-{uuid.uuid4().hex[:8]}")
        self.client.max_inflight_messages_set(1000)
        self.client.max_queued_messages_set(0)
        self.client.connect(cfg.host, cfg.port)
        self.client.loop_start()

    def send(self, messages: list[tuple[str, bytes]]) -> None:
        infos = [self.client.publish(topic, payload, qos=1) for topic, payload in messages]
        for info in infos:
            info.wait_for_publish(timeout=60)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _dose_events(device_ids: list[str], per_device: int, tag: str) -> list[tuple[str, bytes]]:
    return [
        (
            f"carealarm/v1/devices/{d}/dose",
            json.dumps(
                {"msg_id": f"{tag}-{d}-{i}", "ts": now_ms(), "event": "taken", "dose_id": f"d{i}"}
            ).encode(),
        )
        for i in range(per_device)
        for d in device_ids
    ]


def _stored(sessions: SessionFactory, tag: str) -> list[str]:
    with sessions() as s:
        return list(s.scalars(select(DeviceEvent.msg_id).where(DeviceEvent.msg_id.like(f"{tag}-%"))))


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[EmbeddedBroker]:
    b = EmbeddedBroker(tmp_path / "broker", free_port())
    b.start([])
    yield b
    b.stop()


def _gateway(broker_cfg: MqttConfig, sessions: SessionFactory, name: str, **kw: object) -> Gateway:
    gw = Gateway(mqtt=broker_cfg, sessions=sessions, name=name, **kw)  # type: ignore[arg-type]
    gw.start()
    assert gw.wait_connected(10)
    time.sleep(0.2)
    return gw


def test_kill_9_during_a_burst_loses_and_doubles_nothing(
    broker: EmbeddedBroker, db_url: str, tmp_path: Path
) -> None:
    """`carealarm gateway` SIGKILLed mid-burst: after a restart every message is stored exactly once."""
    upgrade(db_url)
    engine = make_engine(db_url)
    sessions = make_session_factory(engine)
    devices = _register(sessions)
    env = {
        **os.environ,
        "CAREALARM_DATABASE_URL": db_url,
        "CAREALARM_MQTT_URL": broker.url,
        "CAREALARM_DATA_DIR": str(tmp_path),
        "CAREALARM_GATEWAY_NAME": "kill9",
    }

    def start() -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "carealarm.cli", "gateway"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        return proc

    proc = start()
    burst = _dose_events(devices, 40, "k9")  # 2,000 events
    pub = Publisher(service_config(broker))
    try:
        wait_for(
            lambda: _subscribed(broker, "carealarm-gateway-kill9-bulk"), 20, what="the gateway to subscribe"
        )
        pub.send(burst[:200])
        wait_for(lambda: len(_stored(sessions, "k9")) >= 50, 30, what="the first events to be stored")
        # Publish the rest while the gateway is being killed in the middle of it.
        sender = __import__("threading").Thread(target=pub.send, args=(burst[200:],))
        sender.start()
        time.sleep(0.3)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        at_kill = len(_stored(sessions, "k9"))
        sender.join(60)
        proc = start()
        wait_for(lambda: len(_stored(sessions, "k9")) == len(burst), 90, what="every event after the restart")
        stored = _stored(sessions, "k9")
        print(
            f"\nkill -9: published {len(burst)}, stored at the kill {at_kill}, stored after restart "
            f"{len(stored)}, distinct {len(set(stored))}"
        )
        assert sorted(stored) == sorted(json.loads(p)["msg_id"] for _, p in burst)
    finally:
        pub.close()
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
        engine.dispose()


def _subscribed(broker: EmbeddedBroker, client_id: str) -> bool:
    """True once the broker's log shows the client connected (its subscription follows at once)."""
    log = (broker.directory / "mosquitto.log").read_text(errors="replace")
    return client_id in log


def test_broker_restart_reconnects_and_resubscribes(broker: EmbeddedBroker, sessions: SessionFactory) -> None:
    """After Mosquitto restarts, the gateway reconnects by itself and events flow again; nothing is lost."""
    devices = _register(sessions, 5)
    gw = _gateway(service_config(broker), sessions, "restart")
    try:
        pub = Publisher(service_config(broker))
        pub.send(_dose_events(devices, 2, "before"))
        pub.close()
        wait_for(lambda: len(_stored(sessions, "before")) == 10, 15, what="events before the restart")
        broker.stop()
        wait_for(lambda: not gw.connected, 10, what="the gateway to notice the broker is gone")
        broker.start([])
        wait_for(lambda: gw.connected, 30, what="the gateway to reconnect")
        time.sleep(0.3)
        pub = Publisher(service_config(broker))
        pub.send(_dose_events(devices, 2, "after"))
        pub.close()
        wait_for(lambda: len(_stored(sessions, "after")) == 10, 15, what="events after the restart")
        print(
            f"\nbroker restart: 10 events before, 10 after; stored {len(_stored(sessions, 'before'))} + "
            f"{len(_stored(sessions, 'after'))}"
        )
        assert gw.connected
        assert sorted(_stored(sessions, "before") + _stored(sessions, "after")) == sorted(
            json.loads(p)["msg_id"]
            for _, p in _dose_events(devices, 2, "before") + _dose_events(devices, 2, "after")
        )
    finally:
        gw.stop()


def test_database_outage_holds_acks_and_recovers(broker: EmbeddedBroker, pg_server: str) -> None:
    """PostgreSQL unreachable: the gateway acks nothing and keeps retrying; when it returns, all is stored."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"carealarm_t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(pg_server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    server = make_url(pg_server)
    proxy = TcpProxy(server.host or "127.0.0.1", server.port or 5432)
    url = server.set(database=name, host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    upgrade(url)
    engine = make_engine(url, pool_timeout=5, connect_args={"connect_timeout": 2})
    sessions = make_session_factory(engine)
    devices = _register(sessions, 5)
    gw = _gateway(service_config(broker), sessions, "outage")
    probe = MqttProbe(service_config(broker))
    try:
        assert probe.connected()
        probe.subscribe("carealarm/v1/devices/+/ack")
        proxy.cut()
        pub = Publisher(service_config(broker))
        events = _dose_events(devices, 4, "outage")
        pub.send(events)
        pub.close()
        time.sleep(3)
        assert probe.drain() == [], "nothing may be acknowledged while the database is away"
        assert gw.metrics.store_errors >= 1
        proxy.restore()
        wait_for(lambda: len(_stored(sessions, "outage")) == len(events), 60, what="storage after the outage")
        acks = [json.loads(p)["msg_id"] for _, p, _ in probe.drain(2.0)]
        print(
            f"\ndatabase outage: published {len(events)} during the outage, store errors "
            f"{gw.metrics.store_errors}, stored after it {len(_stored(sessions, 'outage'))}, acks {len(acks)}"
        )
        assert sorted(set(acks)) == sorted(json.loads(p)["msg_id"] for _, p in events)
    finally:
        probe.close()
        gw.stop()
        engine.dispose()
        proxy.close()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def test_an_alarm_is_not_held_back_by_a_heartbeat_backlog(
    broker: EmbeddedBroker, sessions: SessionFactory
) -> None:
    """20,000 heartbeats queued at the broker, then one alarm: the alarm is stored before the backlog is
    worked off (alarms have a broker session of their own)."""
    devices = _register(sessions, 100, "hb")
    gw = _gateway(service_config(broker), sessions, "flood")
    gw.stop()  # its sessions stay at the broker and collect what is published now
    pub = Publisher(service_config(broker))
    beats = [
        (
            f"carealarm/v1/devices/{devices[i % 100]}/heartbeat",
            json.dumps({"msg_id": f"h{i}", "ts": now_ms()}).encode(),
        )
        for i in range(20_000)
    ]
    pub.send(beats)
    pub.send(
        [("carealarm/v1/devices/hb-007/alarm", json.dumps({"msg_id": "urgent", "ts": now_ms()}).encode())]
    )
    pub.close()
    gw = _gateway(service_config(broker), sessions, "flood", rate_limiter=_NoLimit())
    try:
        wait_for(
            lambda: _stored(sessions, "urgent") == ["urgent"] or bool(_stored_exact(sessions, "urgent")),
            30,
            what="the alarm",
        )
        seen = gw.metrics.received["heartbeat"]
        print(
            f"\nheartbeat backlog: 20000 queued before the alarm; heartbeats handled when it was stored: "
            f"{seen}"
        )
        assert seen < 20_000
    finally:
        gw.stop()


class _NoLimit:
    """A rate limiter that allows everything (this test publishes 200 messages per device on purpose)."""

    def allow(self, _device: str, _now: float) -> bool:
        return True


def _stored_exact(sessions: SessionFactory, msg_id: str) -> bool:
    with sessions() as s:
        return bool(
            s.scalar(select(func.count()).select_from(DeviceEvent).where(DeviceEvent.msg_id == msg_id))
        )


def test_priority_queue_puts_alarms_first() -> None:
    """Inside the gateway, an alarm taken from the queue comes before heartbeats that arrived earlier."""
    gw = Gateway(mqtt=MqttConfig("127.0.0.1", 1), sessions=None, name="unit")  # type: ignore[arg-type]

    class Msg:
        def __init__(self, topic: str, mid: int) -> None:
            self.topic, self.payload, self.mid, self.qos, self.retain = topic, b"{}", mid, 1, False

    for i in range(1000):
        gw._on_message(gw._links[1], Msg(f"carealarm/v1/devices/d{i}/heartbeat", i))  # type: ignore[arg-type]
    gw._on_message(gw._links[0], Msg("carealarm/v1/devices/d1/alarm", 5000))  # type: ignore[arg-type]
    batch: list[Inbound] = gw._take_batch()
    assert batch[0].topic.endswith("/alarm") and batch[0].link == 0


def test_hostile_input_is_refused_with_reasons(broker: EmbeddedBroker, sessions: SessionFactory) -> None:
    """Each kind of broken or hostile message is dead-lettered with its reason, counted and nacked."""
    [device] = _register(sessions, 1, "bad")
    gw = _gateway(service_config(broker), sessions, "hostile")
    probe = MqttProbe(service_config(broker))
    topic = f"carealarm/v1/devices/{device}"
    cases = {
        "bad_json": (f"{topic}/alarm", b"{nope"),
        "bad_type": (f"{topic}/dose", b'{"msg_id":"t1","ts":"now","event":"taken","dose_id":"d"}'),
        "missing_field": (f"{topic}/dose", b'{"msg_id":"t2","ts":1}'),
        "too_large": (f"{topic}/alarm", b'{"msg_id":"t3","ts":1,"x":"' + b"a" * 5000 + b'"}'),
        "bad_value": (f"{topic}/alarm", b'{"msg_id":"t4","ts":1,"alarm_kind":"unicorn"}'),
        "bad_clock": (
            f"{topic}/dose",
            json.dumps(
                {"msg_id": "t5", "ts": now_ms() + 10 * 86_400_000, "event": "taken", "dose_id": "d"}
            ).encode(),
        ),
        "unknown_device": ("carealarm/v1/devices/nobody-1/alarm", b'{"msg_id":"t6","ts":1}'),
    }
    try:
        assert probe.connected()
        probe.subscribe(f"{topic}/ack")
        pub = Publisher(service_config(broker))
        pub.send(list(cases.values()))
        # An alarm with a wildly wrong clock is still accepted: an alarm is never refused for its clock.
        pub.send([(f"{topic}/alarm", json.dumps({"msg_id": "skewed", "ts": 1}).encode())])
        pub.close()
        wait_for(lambda: _dead_reasons(sessions) >= set(cases), 15, what="every dead letter")
        # Sent after the others, it may be committed in a later batch than the last dead letter.
        wait_for(lambda: _stored_exact(sessions, "skewed"), 10, what="the skewed alarm to be stored")
        nacks = {json.loads(p).get("reason") for _, p, _ in probe.drain(1.0)}
        print(
            f"\nhostile input: refused {sorted(_dead_reasons(sessions))}; "
            f"nacks seen {sorted(r for r in nacks if r)}"
        )
        assert set(cases) - {"unknown_device"} <= nacks
        for reason in cases:
            assert gw.metrics.rejected[reason] >= 1, reason
        assert gw.metrics.rejected["clock_skew_accepted"] == 1
    finally:
        probe.close()
        gw.stop()


def _dead_reasons(sessions: SessionFactory) -> set[str]:
    with sessions() as s:
        return set(s.scalars(select(DeadLetter.reason)))


def test_a_flooding_device_does_not_hold_up_others(broker: EmbeddedBroker, sessions: SessionFactory) -> None:
    """One device sending 2,000 messages is rate-limited; another device's alarm is stored and acked."""
    devices = _register(sessions, 2, "fl")
    gw = _gateway(service_config(broker), sessions, "fairness")
    probe = MqttProbe(service_config(broker))
    try:
        assert probe.connected()
        probe.subscribe(f"carealarm/v1/devices/{devices[1]}/ack")
        pub = Publisher(service_config(broker))
        pub.send(_dose_events([devices[0]], 2000, "flood"))
        pub.send(
            [
                (
                    f"carealarm/v1/devices/{devices[1]}/alarm",
                    json.dumps({"msg_id": "calm", "ts": now_ms()}).encode(),
                )
            ]
        )
        pub.close()
        _, payload, _ = probe.next(timeout=20)
        assert json.loads(payload) == {"msg_id": "calm", "status": "accepted"}
        wait_for(lambda: gw.metrics.received["dose"] >= 2000, 30, what="the flood to be worked off")
        limited = gw.metrics.rejected["rate_limited"]
        print(
            f"\nflood: 2000 from one device, {len(_stored(sessions, 'flood'))} stored, "
            f"{limited} rate-limited; "
            "the other device's alarm was accepted"
        )
        assert limited > 0
    finally:
        probe.close()
        gw.stop()


@pytest.mark.parametrize("kind", ["embedded", "system"])
def test_two_gateways_share_the_load_and_store_each_event_once(
    kind: str, request: pytest.FixtureRequest, sessions: SessionFactory, tmp_path: Path
) -> None:
    """Two gateways on one shared subscription: each event is delivered to one of them and stored once."""
    if kind == "embedded":
        b = EmbeddedBroker(tmp_path / "broker", free_port())
        b.start([])
        cfg = service_config(b)
    else:
        cfg = request.getfixturevalue("system_broker")
    tag = f"sh{uuid.uuid4().hex[:6]}"
    devices = _register(sessions, 20, tag)
    group = f"gw-{tag}"
    gws = [_gateway(cfg, sessions, f"{tag}-{i}", share_group=group) for i in range(2)]
    try:
        events = _dose_events(devices, 10, tag)
        pub = Publisher(cfg)
        pub.send(events)
        pub.close()
        wait_for(lambda: len(_stored(sessions, tag)) == len(events), 30, what="every shared event")
        shares = [gw.metrics.received["dose"] for gw in gws]
        print(
            f"\nshared subscription ({kind}): {len(events)} events, handled {shares}, "
            f"stored {len(_stored(sessions, tag))}"
        )
        assert len(set(_stored(sessions, tag))) == len(events)
        assert all(n > 0 for n in shares)
    finally:
        for gw in gws:
            gw.stop()
        if kind == "embedded":
            b.stop()
        else:
            for i in range(2):
                for role in ("alarms", "bulk"):
                    forget_session(cfg, f"carealarm-gateway-{tag}-{i}-{role}")


def test_devices_connect_over_tls(tmp_path: Path, sessions: SessionFactory) -> None:
    """With a TLS listener configured, a device publishes over TLS (mosquitto_pub --cafile) and is stored."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    tls_port = free_port()
    b = EmbeddedBroker(
        tmp_path / "broker", free_port(), tls=TlsListener(tls_port, cert, key, bind="127.0.0.1")
    )
    with sessions.begin() as s:
        client = add_client(s, name="TLS", now_ms=now_ms())
        add_device(
            s, device_id="tls-1", client_id=client.id, kind="alarm_button", now_ms=now_ms(), password="pw-tls"
        )
    b.start([("tls-1", mosquitto_hash("pw-tls"))])
    gw = _gateway(service_config(b), sessions, "tls")
    try:
        subprocess.run(
            [
                "mosquitto_pub",
                "-h",
                "localhost",
                "-p",
                str(tls_port),
                "--cafile",
                str(cert),
                "-u",
                "tls-1",
                "-P",
                "pw-tls",
                "-q",
                "1",
                "-t",
                "carealarm/v1/devices/tls-1/alarm",
                "-m",
                json.dumps({"msg_id": "over-tls", "ts": now_ms()}),
            ],
            check=True,
            timeout=10,
        )
        wait_for(lambda: _stored_exact(sessions, "over-tls"), 10, what="the alarm sent over TLS")
        plain = subprocess.run(
            [
                "mosquitto_pub",
                "-h",
                "localhost",
                "-p",
                str(tls_port),
                "-u",
                "tls-1",
                "-P",
                "pw-tls",
                "-t",
                "carealarm/v1/devices/tls-1/alarm",
                "-m",
                "{}",
            ],
            capture_output=True,
            timeout=10,
        )
        assert plain.returncode != 0, "plain MQTT on the TLS port must fail"
    finally:
        gw.stop()
        b.stop()


def test_standalone_gateway_serves_metrics(broker: EmbeddedBroker, tmp_path: Path) -> None:
    """`carealarm gateway` with CAREALARM_METRICS_PORT serves Prometheus metrics."""
    import urllib.request

    url = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    upgrade(url)
    port = free_port()
    env = {
        **os.environ,
        "CAREALARM_DATABASE_URL": url,
        "CAREALARM_MQTT_URL": broker.url,
        "CAREALARM_METRICS_PORT": str(port),
        "CAREALARM_DATA_DIR": str(tmp_path),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "carealarm.cli", "gateway"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:

        def scrape() -> str:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1) as r:
                    return str(r.read().decode())
            except OSError:
                return ""

        wait_for(lambda: "carealarm_gateway_store_seconds_count" in scrape(), 20, what="the metrics endpoint")
        assert "carealarm_gateway_devices_online" in scrape()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)


_ = paho  # the Publisher's client type


def test_reports_backlog_does_not_rate_limit_an_alarm() -> None:
    """A device that used up its report bucket can still raise an alarm (alarms have their own bucket)."""
    gw = Gateway(mqtt=MqttConfig("127.0.0.1", 1), sessions=None, name="limits")  # type: ignore[arg-type]

    class Msg:
        def __init__(self, topic: str, mid: int) -> None:
            self.topic, self.payload, self.mid, self.qos, self.retain = topic, b"{}", mid, 1, False

    for i in range(200):
        gw._on_message(gw._links[1], Msg("carealarm/v1/devices/d1/dose", i))  # type: ignore[arg-type]
    gw._on_message(gw._links[0], Msg("carealarm/v1/devices/d1/alarm", 999))  # type: ignore[arg-type]
    batch = gw._take_batch()
    assert batch[0].topic.endswith("/alarm") and batch[0].refused is None
    assert sum(1 for b in batch if b.refused == "rate_limited") >= 100
