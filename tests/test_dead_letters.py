"""Bounded dead letters (issue 11, item 6) through the embedded Mosquitto and a real gateway, on SQLite and
PostgreSQL: a refused payload is kept as its first 4 KiB with its size and SHA-256; a device's refusals
beyond its hourly cap are counted, not stored; a retained message other than status is refused, dead-lettered
and cleared at the broker; supervisors see the rejections in the API and on the management page.

Before this change every refused payload was kept whole (60 x 1 MB from one device grew the database by
98 MB) and a retained alarm was replayed at every restart. Our own broker now refuses packets over 8 KiB
(``carealarm.broker.MAX_PACKET_SIZE``), so 100 KB payloads are sent through one started without that limit,
as an external broker may be (Mosquitto's default is 256 MB); the cap is shown with payloads our broker
lets through.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from helpers import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, MqttProbe, free_port, service_config, wait_for
from sqlalchemy import bindparam, select, text

import carealarm.broker
from carealarm.broker import EmbeddedBroker
from central.auth import hash_password
from gateway.ingest import Inbound, plan_batch
from gateway.service import Gateway
from gateway.store import store_batch
from messaging.accounts import mosquitto_hash
from messaging.mqtt import MqttConfig
from storage.db import SessionFactory
from storage.models import DeadLetter, DeviceEvent
from storage.registry import add_client, add_device, add_user

HOUR = 3_600_000
KIB = 1024
GARBAGE = 100_000  # bytes: a broken device's payload, 25 times the protocol's limit
# Garbage our own broker lets through (its packet limit is 8 KiB): still too large for the protocol.
SMALL_GARBAGE = 6_000
# Every test's gateway clock stands in the middle of an hour: the cap counts per clock hour, and a test
# running at hh:59:59 must not see its refusals split over two hours.
MID_HOUR = int(time.time() * 1000) // HOUR * HOUR + HOUR // 2
PASSWORD = "pw-dead-letters"
# An oversized dose report with two control bytes in its first bytes (the preview shows them as '.').
BIG = b'{"msg_id":"d-1","ts":1,"event":"taken",\x00\x01' + b"x" * 5000


@dataclass
class Rig:
    broker: EmbeddedBroker
    sessions: SessionFactory
    device_id: str
    gateway: Gateway | None = None

    def start_gateway(self, **kw: object) -> Gateway:
        gw = Gateway(
            mqtt=service_config(self.broker),
            sessions=self.sessions,
            name=f"dl-{self.device_id}",
            liveness_flush_s=0.5,
            **kw,  # type: ignore[arg-type]
        )
        gw.start()
        assert gw.wait_connected(10), "gateway did not connect"
        time.sleep(0.2)  # let the SUBSCRIBE land
        self.gateway = gw
        return gw

    def stop_gateway(self) -> None:
        if self.gateway is not None:
            self.gateway.stop()
            self.gateway = None

    def device(self) -> MqttProbe:
        """An MQTT connection with the device's own credentials (the broker's ACL applies)."""
        cfg = MqttConfig("127.0.0.1", self.broker.port, self.device_id, PASSWORD)
        probe = MqttProbe(cfg, client_id=self.device_id)
        assert probe.connected(), "the device could not connect"
        return probe

    def topic(self, kind: str) -> str:
        return f"carealarm/v1/devices/{self.device_id}/{kind}"

    def letters(self) -> list[DeadLetter]:
        with self.sessions() as s:
            return list(
                s.scalars(
                    select(DeadLetter).where(DeadLetter.device_id == self.device_id).order_by(DeadLetter.id)
                )
            )

    def events(self) -> list[DeviceEvent]:
        with self.sessions() as s:
            return list(s.scalars(select(DeviceEvent).where(DeviceEvent.device_id == self.device_id)))


def _rig(sessions: SessionFactory, broker: EmbeddedBroker) -> Iterator[Rig]:
    device_id = f"btn-{uuid.uuid4().hex[:8]}"
    with sessions.begin() as s:
        client = add_client(s, name="Dhr. Test", now_ms=MID_HOUR)
        add_device(
            s,
            device_id=device_id,
            client_id=client.id,
            kind="alarm_button",
            now_ms=MID_HOUR,
            password=PASSWORD,
        )
    broker.reload([(device_id, mosquitto_hash(PASSWORD))])
    rig = Rig(broker, sessions, device_id)
    try:
        yield rig
    finally:
        rig.stop_gateway()


@pytest.fixture
def rig(sessions: SessionFactory, embedded_broker: EmbeddedBroker) -> Iterator[Rig]:
    """A registered device and the embedded broker as carealarm runs it."""
    yield from _rig(sessions, embedded_broker)


@pytest.fixture
def rig_without_packet_limit(
    sessions: SessionFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Rig]:
    """The same, on an embedded broker started without the 8 KiB packet limit (as an external one may be)."""
    monkeypatch.setattr(carealarm.broker, "MAX_PACKET_SIZE", 4 * 1024 * 1024)
    broker = EmbeddedBroker(tmp_path / "open-broker", free_port())
    broker.start([])
    try:
        yield from _rig(sessions, broker)
    finally:
        broker.stop()


def table_bytes(sessions: SessionFactory) -> int:
    """What the dead-letter table takes on disk, its indexes and out-of-line storage included."""
    with sessions() as s:
        if s.get_bind().dialect.name == "postgresql":
            return int(s.scalar(text("SELECT pg_total_relation_size('dead_letters')")))
        names = list(s.scalars(text("SELECT name FROM sqlite_master WHERE tbl_name = 'dead_letters'")))
        query = text("SELECT SUM(pgsize) FROM dbstat WHERE name IN :names")
        return int(s.scalar(query.bindparams(bindparam("names", expanding=True)), {"names": names}) or 0)


def send(probe: MqttProbe, topic: str, payloads: list[bytes], retain: bool = False) -> None:
    """Publish at QoS 1 and wait for every PUBACK from the broker."""
    infos = [probe.client.publish(topic, p, qos=1, retain=retain) for p in payloads]
    for info in infos:
        info.wait_for_publish(timeout=30)


def test_refused_payloads_keep_their_first_4_kib_with_size_and_hash(rig_without_packet_limit: Rig) -> None:
    """20 x 100 KB of garbage from one device grow the table by about 20 x 4 KiB; each has size and hash."""
    rig = rig_without_packet_limit
    gw = rig.start_gateway(clock_ms=lambda: MID_HOUR)
    before = table_bytes(rig.sessions)
    payloads = [os.urandom(GARBAGE) for _ in range(20)]  # random: no compression flatters the figure
    device = rig.device()
    try:
        send(device, rig.topic("alarm"), payloads)
        wait_for(lambda: gw.metrics.rejected["too_large"] == 20, 30, what="the 20 refusals")
    finally:
        device.close()
    grown = table_bytes(rig.sessions) - before
    with rig.sessions() as s:
        dialect = s.get_bind().dialect.name
    print(f"\n{dialect}: 20 x {GARBAGE} B refused, the table grew by {grown} B ({grown // 20} B each)")
    # Whole, the payloads would take 2 MB. Kept: 4 KiB a row plus the row and its index entries (SQLite
    # ~4.6 KiB a row; PostgreSQL ~6 KiB, its TOAST storing incompressible bytes in 2 KB chunks, four to a
    # page), plus the first pages of a new table's indexes and TOAST table.
    assert grown <= 20 * 7 * KIB + 64 * KIB, grown
    letters = rig.letters()
    assert len(letters) == 20
    by_hash = {hashlib.sha256(p).hexdigest(): p for p in payloads}
    for letter in letters:
        assert letter.reason == "too_large"
        assert letter.payload_size == GARBAGE
        assert letter.payload == by_hash[letter.payload_sha256][: 4 * KIB]
        assert letter.refusals == 1
    assert {letter.payload_sha256 for letter in letters} == set(by_hash)


def test_beyond_the_hourly_cap_refusals_are_counted_not_stored(rig: Rig) -> None:
    """Past 20 dead letters an hour a device's refusals are counted on a summary row; each is nacked."""
    gw = rig.start_gateway(clock_ms=lambda: MID_HOUR)
    acks = MqttProbe(service_config(rig.broker))
    assert acks.connected()
    acks.subscribe(rig.topic("ack"))
    device = rig.device()
    try:
        send(device, rig.topic("dose"), [os.urandom(SMALL_GARBAGE) for _ in range(20)])
        wait_for(lambda: gw.metrics.rejected["too_large"] == 20, 30, what="the first 20 refusals")
        full = table_bytes(rig.sessions)
        send(device, rig.topic("dose"), [os.urandom(SMALL_GARBAGE) for _ in range(15)])
        wait_for(lambda: gw.metrics.rejected["too_large"] == 35, 30, what="15 more refusals")
        answers = [json.loads(acks.next(timeout=10)[1]) for _ in range(35)]
    finally:
        device.close()
        acks.close()
    assert answers == [{"msg_id": None, "status": "rejected", "reason": "too_large"}] * 35
    assert len(rig.letters()) == 21, "20 dead letters and one summary row"
    stored = [d for d in rig.letters() if d.payload_size is not None]
    summaries = [d for d in rig.letters() if d.payload_size is None]
    assert len(stored) == 20
    assert [(s.reason, s.refusals, s.payload, s.payload_sha256) for s in summaries] == [
        ("too_large", 15, b"", None)
    ]
    assert gw.dead_letters_counted_only == 15
    # 15 x 6 KB more cost one summary row, not 15 x 4 KiB.
    assert table_bytes(rig.sessions) - full < 15 * 4 * KIB


def test_the_cap_is_per_device_and_clock_hour() -> None:
    """A simulated clock: 25 refusals in one hour store 20 and count 5; another device and the next hour
    start afresh; rows already stored this hour count against the cap."""
    from gateway.ingest import DEAD_LETTERS_PER_HOUR, bound_dead_letters

    assert DEAD_LETTERS_PER_HOUR == 20
    t0 = 400 * HOUR + 10
    batch = [Inbound("carealarm/v1/devices/a-1/alarm", b"{x", i, 1, t0 + i) for i in range(25)]
    batch += [Inbound("carealarm/v1/devices/b-1/dose", b"[]", 100 + i, 1, t0 + i) for i in range(3)]
    batch += [Inbound("carealarm/v1/devices/a-1/alarm", b"{y", 200 + i, 1, t0 + HOUR + i) for i in range(2)]
    rejects = plan_batch(batch, lambda _d: True, t0).rejects
    keep, over = bound_dead_letters(rejects, {})
    assert sum(1 for r in keep if r.device_id == "a-1") == 22  # 20 in the first hour, 2 in the next
    assert sum(1 for r in keep if r.device_id == "b-1") == 3
    [summary] = over
    assert (summary.device_id, summary.window, summary.reason, summary.count) == ("a-1", 400, "bad_json", 5)
    assert summary.newest.inbound.received_ms == t0 + 24
    keep, over = bound_dead_letters(rejects, {("b-1", 400): 19})
    assert sum(1 for r in keep if r.device_id == "b-1") == 1
    assert {(o.device_id, o.count) for o in over} == {("a-1", 5), ("b-1", 2)}


def test_a_retained_alarm_is_refused_dead_lettered_and_cleared_at_the_broker(rig: Rig) -> None:
    """A retained alarm the broker replays to a subscribing gateway is refused `retained`, dead-lettered and
    cleared: a new subscriber gets nothing, and a restarted gateway is not given it again."""
    acks = MqttProbe(service_config(rig.broker))
    assert acks.connected()
    acks.subscribe(rig.topic("ack"))
    alarm = json.dumps({"msg_id": "kept-1", "ts": int(time.time() * 1000), "alarm_kind": "pendant"}).encode()
    device = rig.device()
    try:
        send(device, rig.topic("alarm"), [alarm], retain=True)  # no gateway has subscribed yet
    finally:
        device.close()
    gw = rig.start_gateway()
    try:
        assert json.loads(acks.next(timeout=10)[1]) == {
            "msg_id": "kept-1",
            "status": "rejected",
            "reason": "retained",
        }
    finally:
        acks.close()
    wait_for(lambda: gw.retained_cleared == 1, 10, what="the retained alarm to be cleared")
    [letter] = rig.letters()
    assert (letter.reason, letter.payload, letter.payload_size) == ("retained", alarm, len(alarm))
    assert rig.events() == []
    listener = MqttProbe(service_config(rig.broker))
    try:
        assert listener.connected()
        listener.subscribe(rig.topic("alarm"))
        assert listener.drain(1.0) == [], "the broker still holds the retained alarm"
    finally:
        listener.close()
    # The gateway heard its own clearing (an empty message) and took it without refusing it.
    assert gw.metrics.received["alarm"] == 2 and dict(gw.metrics.rejected) == {"retained": 1}
    rig.stop_gateway()
    gw = rig.start_gateway()
    time.sleep(1.0)
    assert gw.metrics.received["alarm"] == 0
    assert len(rig.letters()) == 1


def test_a_live_retained_alarm_is_taken_and_its_copy_cleared_at_the_next_subscribe(rig: Rig) -> None:
    """An alarm published retained while the gateway listens arrives unflagged: it is stored and accepted
    (an alarm is never lost to a firmware flag); the broker's copy is refused and cleared at the restart."""
    gw = rig.start_gateway()
    acks = MqttProbe(service_config(rig.broker))
    assert acks.connected()
    acks.subscribe(rig.topic("ack"))
    alarm = json.dumps({"msg_id": "live-1", "ts": int(time.time() * 1000), "alarm_kind": "pendant"}).encode()
    device = rig.device()
    try:
        send(device, rig.topic("alarm"), [alarm], retain=True)
        assert json.loads(acks.next(timeout=10)[1]) == {"msg_id": "live-1", "status": "accepted"}
        assert [e.msg_id for e in rig.events()] == ["live-1"]
        rig.stop_gateway()
        gw = rig.start_gateway()
        assert json.loads(acks.next(timeout=10)[1])["reason"] == "retained"
    finally:
        device.close()
        acks.close()
    wait_for(lambda: gw.retained_cleared == 1, 10, what="the retained copy to be cleared")
    assert [e.msg_id for e in rig.events()] == ["live-1"]
    assert [d.reason for d in rig.letters()] == ["retained"]


# -- the console -------------------------------------------------------------------------------------------


def _seed_rejections(sessions: SessionFactory, now_ms: int) -> None:
    """Through the gateway's own planner and store: 23 oversized doses from disp-7 (20 stored, 3 counted),
    a bad-JSON alarm from btn-3, and an old refusal outside the window."""
    with sessions.begin() as s:
        for username, role in (("sup", "supervisor"), ("adm", "admin"), ("nurse", "care_nurse")):
            add_user(
                s,
                username=username,
                display_name=f"{username.title()} Name",
                role=role,
                password_hash=hash_password(f"{username}-password"),
                now_ms=now_ms,
            )
    batch = [Inbound("carealarm/v1/devices/disp-7/dose", BIG, i, 1, now_ms - 60_000 + i) for i in range(23)]
    batch.append(Inbound("carealarm/v1/devices/btn-3/alarm", b"{oops", 99, 1, now_ms - 30_000))
    old = [Inbound("carealarm/v1/devices/btn-9/alarm", b"{old", 98, 1, now_ms - 3 * 24 * HOUR)]
    for inbound in (batch, old):
        with sessions.begin() as s:
            store_batch(s, plan_batch(inbound, lambda _d: True, now_ms))


def _app(sessions: SessionFactory, now_ms: int) -> object:
    from central.app import CentralContext, create_app
    from central.feed import Broadcaster
    from central.rejections_api import router

    broadcaster = Broadcaster(sessions, poll_interval_s=0.5)
    ctx = CentralContext(
        sessions=sessions, broadcaster=broadcaster, notify_alerts=broadcaster.wake, clock_ms=lambda: now_ms
    )
    app = create_app(ctx)
    if not any(getattr(r, "path", None) == "/api/rejections" for r in app.routes):
        app.include_router(router)  # until central/app.py includes it
    return app


@pytest.fixture
def api(sessions: SessionFactory) -> Iterator[TestClient]:
    _seed_rejections(sessions, MID_HOUR)
    with TestClient(_app(sessions, MID_HOUR)) as client:  # type: ignore[arg-type]
        yield client


def _sign_in(api: TestClient, username: str) -> None:
    response = api.post("/api/session", json={"username": username, "password": f"{username}-password"})
    assert response.status_code == 200, response.text


def test_rejections_api_gives_a_supervisor_counts_and_the_latest_per_device(api: TestClient) -> None:
    """Per device in the window: counts by reason (the counted-only ones included) and the newest rows with
    time, topic, reason, detail, size, hash and a printable preview."""
    _sign_in(api, "sup")
    body = api.get("/api/rejections", params={"limit": 3}).json()
    devices = {d["device_id"]: d for d in body["devices"]}
    assert set(devices) == {"disp-7", "btn-3"}  # btn-9's refusal is three days old
    assert [d["device_id"] for d in body["devices"]] == ["btn-3", "disp-7"]  # most recently refused first
    disp = devices["disp-7"]
    assert disp["by_reason"] == {"too_large": 23} and disp["total"] == 23
    assert len(disp["latest"]) == 3
    summary, newest = disp["latest"][0], disp["latest"][1]
    assert summary["refusals"] == 3 and summary["size"] is None and summary["preview"] is None
    assert newest["size"] == len(BIG) and newest["refusals"] == 1
    assert newest["topic"] == "carealarm/v1/devices/disp-7/dose" and newest["reason"] == "too_large"
    assert newest["detail"] == f"{len(BIG)} bytes, limit 4096"
    assert newest["sha256"] == hashlib.sha256(BIG).hexdigest()
    head = '{"msg_id":"d-1","ts":1,"event":"taken",..'
    assert newest["preview"] == head + "x" * (64 - len(head))
    btn = api.get("/api/rejections", params={"device_id": "btn-3"}).json()["devices"]
    assert [(d["device_id"], d["by_reason"]) for d in btn] == [("btn-3", {"bad_json": 1})]
    assert btn[0]["latest"][0]["preview"] == "{oops"
    older = api.get("/api/rejections", params={"since": MID_HOUR - 4 * 24 * HOUR}).json()
    assert {d["device_id"] for d in older["devices"]} == {"disp-7", "btn-3", "btn-9"}


def test_rejections_api_refuses_a_care_nurse_and_bad_parameters(api: TestClient) -> None:
    """A care nurse gets 403; a limit, device id or time out of bounds is a 422; an admin may look."""
    assert api.get("/api/rejections").status_code == 401
    _sign_in(api, "nurse")
    refused = api.get("/api/rejections")
    assert refused.status_code == 403 and "care_nurse" in refused.json()["detail"]
    _sign_in(api, "adm")
    assert api.get("/api/rejections").status_code == 200
    for params in ({"limit": 0}, {"limit": 51}, {"device_id": "a/b"}, {"since": -1}, {"since": 2**53}):
        assert api.get("/api/rejections", params=params).status_code == 422, params
    # Further back than 30 days is cut to 30 days, and the answer says so.
    cut = api.get("/api/rejections", params={"since": MID_HOUR - 31 * 24 * HOUR}).json()
    assert cut["since_ms"] == MID_HOUR - 30 * 24 * HOUR


# -- the management page in Chromium ------------------------------------------------------------------------


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    """The central app on a real uvicorn over a SQLite database with rejections."""
    import uvicorn

    from storage.db import make_engine, make_session_factory, upgrade

    url = f"sqlite:///{tmp_path / 'carealarm.sqlite3'}"
    upgrade(url)
    engine = make_engine(url)
    sessions = make_session_factory(engine)
    now = int(time.time() * 1000)
    _seed_rejections(sessions, now)
    uv = uvicorn.Server(
        uvicorn.Config(_app(sessions, now), host="127.0.0.1", port=free_port(), log_level="warning")
    )  # type: ignore[arg-type]
    thread = threading.Thread(target=uv.run, name="uvicorn", daemon=True)
    thread.start()
    wait_for(lambda: uv.started, 15, what="uvicorn to start")
    try:
        yield f"http://127.0.0.1:{uv.config.port}"
    finally:
        uv.should_exit = True
        thread.join(timeout=10)
        engine.dispose()


@pytest.mark.browser
def test_manage_page_shows_recent_rejections(server: str) -> None:
    """A supervisor opens 'Recent rejections' on the management page and sees each device's counts, the
    newest refusals and the printable start of what was sent."""
    playwright_api = pytest.importorskip(
        "playwright.sync_api", reason="BROWSER TESTS NOT RUN: playwright missing"
    )
    if not Path(CHROMIUM).exists():
        pytest.skip(f"BROWSER TESTS NOT RUN: {CHROMIUM} missing (apt-get install chromium)")
    ARTIFACTS.mkdir(exist_ok=True)
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_context(viewport={"width": 1400, "height": 1000}, locale="en-GB").new_page()
            page.goto(server + "/static/manage.html")
            page.fill("#username", "sup")
            page.fill("#password", "sup-password")
            page.click("#login-form button[type=submit]")
            page.wait_for_selector("body[data-loaded=true]", timeout=10_000)
            page.click("[data-tab=rejections]")
            page.wait_for_selector("#rejections-table tbody tr", timeout=10_000)
            table = page.locator("#rejections-table")
            assert page.locator("#rejections-table tr[data-device=disp-7]").count() == 5
            assert page.locator("#rejections-table tr[data-device=btn-3]").count() == 1
            assert "23: too_large × 23" in table.inner_text()
            assert "3 counted, not kept" in table.inner_text()
            assert '{"msg_id":"d-1","ts":1,"event":"taken",..xxx' in table.inner_text()
            assert "{oops" in table.inner_text()
            page.fill("#rejections-device", "btn-3")
            page.click("#rejections-form button[type=submit]")
            wait_for(
                lambda: page.locator("#rejections-table tr[data-device=disp-7]").count() == 0,
                10,
                what="the filter",
            )
            assert page.locator("#rejections-table tr[data-device=btn-3]").count() == 1
            page.fill("#rejections-device", "")
            page.click("#rejections-form button[type=submit]")
            page.wait_for_selector("#rejections-table tr[data-device=disp-7]", timeout=10_000)
            page.screenshot(path=str(ARTIFACTS / "manage-rejections.png"), full_page=True)
        finally:
            browser.close()
