"""Never hide an alarm (issue 10): each case a care station met, through the real protocol on a real broker,
the whole service (`carealarm run --demo`) on SQLite with the embedded Mosquitto and on PostgreSQL with the
system Mosquitto, and the API the console reads.

Every scenario failed on the alert model that kept one open alert per client and kind.
"""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx2 as httpx
import pytest
from helpers import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, wait_for, wait_in_page
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from station import DeviceClient, Station

AMS = ZoneInfo("Europe/Amsterdam")
POLICY = {"dose_grace_s": 3, "missed_heartbeats": 2, "battery_low_pct": 20}


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def station(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Station]:
    workdir = tmp_path_factory.mktemp(f"station-{request.param}")
    pg_admin = None
    if request.param == "sqlite":
        url, mqtt = f"sqlite:///{workdir / 'carealarm.sqlite3'}", None
    else:
        server: str = request.getfixturevalue("pg_server")
        broker = request.getfixturevalue("system_broker")
        name = f"carealarm_t_{uuid.uuid4().hex[:12]}"
        pg_admin = (create_engine(server, isolation_level="AUTOCOMMIT"), name)
        with pg_admin[0].connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        url = make_url(server).set(database=name).render_as_string(hide_password=False)
        mqtt = (broker.host, broker.port)
    st = Station(workdir, database_url=url, mqtt=mqtt, policy=POLICY)
    st.dose_plan = _plan_doses(st)  # type: ignore[attr-defined]
    try:
        yield st
    finally:
        st.dose_plan.dispenser.close()  # type: ignore[attr-defined]
        code = st.stop()
        if mqtt is not None:
            _leave_the_system_broker_as_found(st)
        if pg_admin is not None:
            with pg_admin[0].connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{pg_admin[1]}" WITH (FORCE)'))
            pg_admin[0].dispose()
    assert code == 0, st.log()


def _leave_the_system_broker_as_found(st: Station) -> None:
    from helpers import forget_session

    from messaging.mqtt import MqttConfig

    cfg = MqttConfig.from_url(f"mqtt://{st.mqtt_host}:{st.mqtt_port}")
    for role in ("alarms", "bulk"):
        forget_session(cfg, f"carealarm-gateway-{st.gateway_name}-{role}")
    import paho.mqtt.publish as publish

    for device in ("btn-001", "btn-002", "btn-003", "btn-004", "btn-005", "btn-006", "tv-001", "tv-002"):
        publish.single(
            f"carealarm/v1/devices/{device}/status", b"", qos=1, retain=True, hostname=cfg.host, port=cfg.port
        )
    publish.single(
        "carealarm/v1/devices/med-006/status", b"", qos=1, retain=True, hostname=cfg.host, port=cfg.port
    )


def _supervisor(st: Station) -> httpx.Client:
    http = httpx.Client(base_url=st.url, timeout=10)
    http.post("/api/session", json={"username": "supervisor", "password": "supervisor"}).raise_for_status()
    return http


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    playwright_api = pytest.importorskip(
        "playwright.sync_api", reason="BROWSER TESTS NOT RUN: playwright missing"
    )
    if not Path(CHROMIUM).exists():
        pytest.skip(
            f"BROWSER TESTS NOT RUN: {CHROMIUM} missing (apt-get install chromium; `make test` does it)"
        )
    ARTIFACTS.mkdir(exist_ok=True)
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


def _console(browser: Any, st: Station, username: str) -> Any:
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.goto(st.url + "/")
    page.fill("#username", username)
    page.fill("#password", username)
    page.click("#login-form button[type=submit]")
    page.wait_for_selector("#conn.conn-up", timeout=10_000)
    return page


def _sounds(page: Any) -> int:
    return int(page.evaluate("window.carealarmSound.played"))


def test_a_second_alarm_while_the_first_is_in_progress_is_news(station: Station, browser: Any) -> None:
    """Mulder presses his pendant; a nurse takes it; then he falls. The fall is a new open alarm that sounds
    on another nurse's console, names the alarm in progress and who has it, and has escalation timers from
    the fall; a press while it is still open is counted on it, sounds again and shows the latest kind."""
    button = station.device("btn-004")
    page = _console(browser, station, "nurse2")
    try:
        assert button.send("alarm", {"alarm_kind": "button"})["status"] == "accepted"
        first = station.wait_alert("Mulder", "the first alarm", kind="alarm", state="open")
        station.act(first["id"], "acknowledge")

        fall_sent = int(time.time() * 1000)
        assert button.send("alarm", {"alarm_kind": "fall"})["status"] == "accepted"
        fall = station.wait_alert("Mulder", "the fall as a new open alarm", kind="alarm", state="open")
        assert fall["id"] != first["id"]
        assert fall["detail"] == "Fall detected"
        assert fall["incident"]["id"] == first["id"]
        assert fall["incident"]["acknowledged_by"] == "Anna de Vries"
        assert fall["opened_ms"] >= fall_sent - 1000
        # The first stays in progress with its nurse.
        [still] = [a for a in station.alerts("Mulder") if a["id"] == first["id"]]
        assert still["state"] == "acknowledged" and still["count"] == 1
        with station.db.connect() as conn:
            dues = conn.execute(
                text("SELECT due_ms FROM escalation_steps WHERE alert_id = :a AND state = 'pending'"),
                {"a": fall["id"]},
            ).scalars()
            assert sorted(d - fall["opened_ms"] for d in dues) == [60_000, 180_000]

        # Another nurse's console: the fall is in the open queue, sounded, and says who is with the client.
        row = page.locator(f"#open-body tr[data-id='{fall['id']}']")
        row.wait_for(timeout=10_000)
        assert "Anna de Vries" in row.locator(".incident").inner_text()
        assert "Fall detected" in row.inner_text()
        wait_in_page(page, "window.carealarmSound.played > 0 && window.carealarmSound.last === 'new alarm'")
        page.screenshot(path=str(ARTIFACTS / f"never-hide-second-alarm-{station.kind}.png"), full_page=True)
        before = _sounds(page)

        # Pressed again before anyone answered: counted on the open fall alarm, which shows the latest kind.
        assert button.send("alarm", {"alarm_kind": "pendant"})["status"] == "accepted"
        again = station.wait_alert("Mulder", "the repeat counted", kind="alarm", state="open", count=2)
        assert again["id"] == fall["id"] and again["detail"] == "Pendant alarm"
        assert again["last_event_ms"] > fall["opened_ms"]
        wait_in_page(page, f"window.carealarmSound.played > {before}")
        assert page.evaluate("window.carealarmSound.last") == "raised again"
        row.locator(".count").wait_for(timeout=5_000)
        assert "Pendant alarm" in row.inner_text()
    finally:
        page.close()
        button.close()


def test_an_offline_alarm_button_has_an_alert_of_its_own(station: Station) -> None:
    """Jansen's tablet falls silent (an open offline alert), then her alarm button loses its connection:
    the button gets its own offline alert, and the tablet coming back does not close the button's."""
    tablet = station.device("tv-001")
    button = station.device("btn-001")
    try:
        tablet.heartbeat(interval_s=5, battery=90)
        button.heartbeat(interval_s=30, battery=80)
        # The tablet stops heartbeating (frozen, still connected): silent after 2 × 5 s, found by a sweep.
        silent = station.wait_alert("Jansen", "the silent tablet's alert", timeout=40, kind="offline")
        assert silent["device"]["id"] == "tv-001"

        button.vanish()  # the broker sends the button's Last Will
        btn_alert = station.wait_alert(
            "Jansen", "the button's own offline alert", timeout=20, kind="offline", priority=2
        )
        assert btn_alert["device"]["id"] == "btn-001" and btn_alert["id"] != silent["id"]

        tablet.heartbeat(interval_s=5, battery=90)  # the tablet is back
        wait_for(
            lambda: all(
                a["device"]["id"] != "tv-001" for a in station.alerts("Jansen") if a["kind"] == "offline"
            ),
            30,
            what="the tablet's alert to resolve",
        )
        offline = [a for a in station.alerts("Jansen") if a["kind"] == "offline"]
        assert [a["device"]["id"] for a in offline] == ["btn-001"], offline
    finally:
        tablet.close()


def test_a_maintenance_window_never_swallows_a_fall(station: Station) -> None:
    """Bos is on holiday (a window for the client): a lost mains supply is held back and recorded, but her
    fall reaches the console as a critical alarm, with a note that it came during the window."""
    client_id = station.client_id("Bos")
    now = int(time.time() * 1000)
    with station.db.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO maintenance_windows (client_id, starts_ms, ends_ms, reason) "
                "VALUES (:c, :s, :e, 'on holiday')"
            ),
            {"c": client_id, "s": now - 1000, "e": now + 3_600_000},
        )
    button = station.device("btn-005")
    try:
        assert button.send("fault", {"fault": "power_lost"})["status"] == "accepted"

        def quieted() -> bool:
            with station.db.connect() as conn:
                return bool(
                    conn.execute(
                        text("SELECT count(*) FROM suppressions WHERE client_id = :c AND kind = 'power'"),
                        {"c": client_id},
                    ).scalar()
                )

        wait_for(quieted, 20, what="the power loss to be held back and recorded")
        assert button.send("alarm", {"alarm_kind": "fall"})["status"] == "accepted"
        fall = station.wait_alert("Bos", "the fall on the console", kind="alarm")
        assert fall["priority"] == 1 and fall["detail"] == "Fall detected" and fall["state"] == "open"
        assert [a["kind"] for a in station.alerts("Bos")] == ["alarm"]
        timeline = station.http.get(f"/api/clients/{client_id}/timeline").json()
        assert "maintenance window" in json.dumps(timeline)
    finally:
        button.close()


@dataclass
class DosePlan:
    client_id: int
    at: str  # HH:MM local
    due_ms: int
    dispenser: DeviceClient


def _plan_doses(st: Station) -> DosePlan:
    """Three doses for Meijer due at the next whole minute at least 15 s ahead, then one removed again."""
    client_id = st.client_id("Meijer")
    at, due_ms = _next_minute()
    dispenser = st.device("med-006")
    supervisor = _supervisor(st)
    try:
        doses = [{"dose_id": d, "at": at} for d in ("removed", "late", "missed")]
        for schedule in (doses, doses[1:]):
            r = supervisor.put(f"/api/clients/{client_id}/schedule", json={"doses": schedule})
            assert r.status_code == 200, r.text
    finally:
        supervisor.close()
    return DosePlan(client_id, at, due_ms, dispenser)


def _next_minute(lead_s: int = 15) -> tuple[str, int]:
    """A local HH:MM at least ``lead_s`` ahead, and its epoch ms."""
    t = dt.datetime.now(AMS) + dt.timedelta(seconds=lead_s + 60)
    t = t.replace(second=0, microsecond=0)
    return t.strftime("%H:%M"), int(t.timestamp() * 1000)


def test_a_different_alarm_under_a_used_msg_id_is_taken_and_the_device_flagged(station: Station) -> None:
    """Smit's button resets its counter: a fall under a msg_id it used for an earlier press is accepted,
    counted on her alarm, and a device-fault alert says the device needs fixing."""
    button = station.device("btn-003")
    try:
        msg_id = button.msg_id()
        assert button.send("alarm", {"alarm_kind": "button"}, msg_id=msg_id)["status"] == "accepted"
        first = station.wait_alert("Smit", "the first alarm", kind="alarm")
        ack = button.send("alarm", {"alarm_kind": "fall"}, msg_id=msg_id)
        assert ack["status"] == "accepted" and ack.get("warning") == "msg_id_reused", ack
        again = station.wait_alert("Smit", "the fall counted", kind="alarm", count=2)
        assert again["id"] == first["id"] and again["detail"] == "Fall detected"
        fault = station.wait_alert("Smit", "the device-fault alert", kind="device_fault")
        assert fault["device"]["id"] == "btn-003" and msg_id in fault["detail"]
    finally:
        button.close()


def test_the_battery_alert_does_not_flap(station: Station) -> None:
    """De Boer's pendant is low while her tablet is full: one battery alert for the pendant, which stays open
    through the next sweeps (it flapped every 10 s when the tablet's charge resolved the client's alert)."""
    button = station.device("btn-002")
    tablet = station.device("tv-002")
    try:
        button.heartbeat(interval_s=30, battery=10)
        tablet.heartbeat(interval_s=30, battery=95)
        alert = station.wait_alert("de Boer", "the pendant's battery alert", kind="battery_low")
        assert alert["device"]["id"] == "btn-002"
        sweeps = station.metric("carealarm_monitor_device_sweeps_total")
        wait_for(
            lambda: station.metric("carealarm_monitor_device_sweeps_total") >= sweeps + 2,
            60,
            what="two more device sweeps (the alert flapped at every one)",
        )
        [still] = [a for a in station.alerts("de Boer") if a["kind"] == "battery_low"]
        assert still["id"] == alert["id"] and still["version"] == alert["version"]
        with station.db.connect() as conn:
            changes = conn.execute(
                text(
                    "SELECT count(*) FROM alert_changes c JOIN alerts a ON a.id = c.alert_id "
                    "WHERE a.kind = 'battery_low' AND a.device_id = 'btn-002'"
                )
            ).scalar()
        assert changes == 1
    finally:
        button.close()
        tablet.close()


def test_each_missed_dose_is_its_own_alert_and_a_schedule_change_is_followed_at_once(
    station: Station,
) -> None:
    """Meijer's schedule got three doses due in the next minute, then one was removed again (when the station
    started, so the minute passes while the other scenarios run). At once: the two kept are reminded and,
    untaken, missed — each its own alert with the client's local time — and the removed one is neither
    reminded nor missed. One taken late closes its own alert only."""
    plan: DosePlan = station.dose_plan  # type: ignore[attr-defined]
    at, due_ms, dispenser = plan.at, plan.due_ms, plan.dispenser
    # The dispenser was sent both schedules, then reminded at the due time of the doses it still holds.
    reminded: list[str] = []
    deadline = time.monotonic() + max(0.0, (due_ms - time.time() * 1000) / 1000) + 20
    while sorted(reminded) != ["late", "missed"] and time.monotonic() < deadline:
        command = dispenser.next_command(timeout=max(0.1, deadline - time.monotonic()))
        if command["command"] == "remind":
            reminded.append(command["args"]["dose_id"])
    assert sorted(reminded) == ["late", "missed"]

    wait_for(
        lambda: len([a for a in station.alerts("Meijer") if a["kind"] == "missed_dose"]) == 2,
        20,
        what="two missed-dose alerts",
    )
    missed = [a for a in station.alerts("Meijer") if a["kind"] == "missed_dose"]
    assert sorted(a["detail"] for a in missed) == [
        f"Dose late due {at} not taken",
        f"Dose missed due {at} not taken",
    ]

    ack = dispenser.send("dose", {"dose_id": "late", "event": "taken", "due_ts": due_ms})
    assert ack["status"] == "accepted"
    wait_for(
        lambda: (
            [a["detail"] for a in station.alerts("Meijer") if a["kind"] == "missed_dose"]
            == [f"Dose missed due {at} not taken"]
        ),
        20,
        what="the late dose to close its own alert only",
    )
    with station.db.connect() as conn:
        states = dict(
            conn.execute(
                text("SELECT dose_id, state FROM dose_instances WHERE client_id = :c AND due_ms = :d"),
                {"c": plan.client_id, "d": due_ms},
            ).all()
        )
    assert states == {"removed": "cancelled", "late": "taken_late", "missed": "missed"}
