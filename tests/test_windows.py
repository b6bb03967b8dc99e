"""Maintenance windows: their rules, the API on SQLite and PostgreSQL (with the monitor holding alerts back,
never an alarm), the command line, the console's panel and the client's timeline in headless Chromium.

Screenshots are kept in test-artifacts/ (windows-*.png).
"""

from __future__ import annotations

import functools
import json
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import uvicorn
from fastapi.testclient import TestClient
from helpers import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, free_port, wait_for
from sqlalchemy import select

from care.windows import (
    MAX_DURATION_MS,
    WindowInvalid,
    check_window,
    create_window,
    end_window,
    window_state,
)
from carealarm.cli import main
from central.app import CentralContext, create_app
from central.auth import COOKIE_NAME, create_session, hash_password
from central.feed import Broadcaster
from monitor.events import handle_pending_events
from storage.db import SessionFactory, make_engine, make_session_factory, upgrade
from storage.models import Alert, AlertNote, DeviceEvent, MaintenanceWindow, Suppression
from storage.records_models import AuditEntry
from storage.registry import add_client, add_device, add_user

NOW = 1_800_000_000_000
MIN = 60_000
HOUR = 60 * MIN
DAY = 24 * HOUR


# -- the rules ----------------------------------------------------------------------------------------


def test_a_window_is_for_a_client_or_one_device_never_both_or_neither() -> None:
    """Exactly one of client and device: a device window must not quiet the whole client."""
    for client_id, device_id in ((None, None), (1, "med-1")):
        with pytest.raises(WindowInvalid, match="exactly one"):
            check_window(
                client_id=client_id, device_id=device_id, starts_ms=None, ends_ms=NOW + HOUR, reason="x" * 5,
                now_ms=NOW,
            )  # fmt: skip
    assert check_window(
        client_id=None, device_id="med-1", starts_ms=None, ends_ms=NOW + HOUR, reason=" repair ", now_ms=NOW
    ) == (NOW, NOW + HOUR, "repair")


def test_a_start_in_the_past_is_now_and_the_end_must_come_after_it() -> None:
    """A start already past is taken as now; an end not after the start (or before now) is refused."""
    start, _end, _reason = check_window(
        client_id=1,
        device_id=None,
        starts_ms=NOW - HOUR,
        ends_ms=NOW + HOUR,
        reason="in hospital",
        now_ms=NOW,
    )
    assert start == NOW
    for starts, ends in ((None, NOW), (NOW + 2 * HOUR, NOW + HOUR), (NOW - 2 * HOUR, NOW - HOUR)):
        with pytest.raises(WindowInvalid, match="end after it starts"):
            check_window(
                client_id=1, device_id=None, starts_ms=starts, ends_ms=ends, reason="in hospital", now_ms=NOW
            )


def test_a_window_lasts_at_most_30_days_starts_within_90_and_gives_a_reason() -> None:
    """30 days is the longest quiet; a start 91 days ahead is a typing error; a reason is 3+ characters."""
    ok = {"client_id": 1, "device_id": None, "starts_ms": None, "reason": "holiday", "now_ms": NOW}
    assert check_window(**ok, ends_ms=NOW + MAX_DURATION_MS)[1] == NOW + 30 * DAY  # type: ignore[arg-type]
    with pytest.raises(WindowInvalid, match="at most 30 days"):
        check_window(**ok, ends_ms=NOW + 30 * DAY + 1)  # type: ignore[arg-type]
    with pytest.raises(WindowInvalid, match="90 days ahead"):
        check_window(**{**ok, "starts_ms": NOW + 91 * DAY}, ends_ms=NOW + 92 * DAY)  # type: ignore[arg-type]
    with pytest.raises(WindowInvalid, match="reason"):
        check_window(**{**ok, "reason": "  x "}, ends_ms=NOW + DAY)  # type: ignore[arg-type]


def test_window_state_upcoming_active_past_and_cancelled() -> None:
    """Upcoming before its start, active until its end, past after; cancelled before it ran: past."""
    assert [window_state(10, 20, now) for now in (9, 10, 19, 20)] == ["upcoming", "active", "active", "past"]
    assert window_state(10, 10, 5) == "past"


# -- the API, with the monitor, on both databases ---------------------------------------------------


@functools.cache
def _password_hash() -> str:
    return hash_password("not-used-here")


class World:
    """The API, its database and a clock the test moves; devices report through the monitor's own code."""

    def __init__(self, api: TestClient, sessions: SessionFactory, clock: list[int], ids: dict[str, int]):
        self.api, self.sessions, self.clock, self.ids = api, sessions, clock, ids
        self.seq = 0

    def as_(self, username: str) -> TestClient:
        with self.sessions.begin() as s:
            token = create_session(s, self.ids[username], self.clock[0], 48.0)  # outlives the test's clock
        self.api.cookies.clear()
        self.api.cookies.set(COOKIE_NAME, token)
        return self.api

    def report(self, device_id: str, kind: str, body: dict[str, object]) -> None:
        """A device event as the gateway stores it, handled by the monitor at the world's time."""
        self.seq += 1
        now = self.clock[0]
        with self.sessions.begin() as s:
            s.add(
                DeviceEvent(
                    device_id=device_id, msg_id=f"m{self.seq}", kind=kind, device_ts_ms=now, received_ms=now,
                    payload=json.dumps({"msg_id": f"m{self.seq}", "ts": now, **body}),
                )
            )  # fmt: skip
        with self.sessions.begin() as s:
            handle_pending_events(s, now)

    def alerts(self) -> list[tuple[str, str | None]]:
        with self.sessions() as s:
            return [(a.kind, a.device_id) for a in s.scalars(select(Alert).order_by(Alert.id))]

    def suppressed(self) -> list[tuple[str, str | None]]:
        with self.sessions() as s:
            return [(q.kind, q.device_id) for q in s.scalars(select(Suppression).order_by(Suppression.id))]

    def audit(self, prefix: str) -> list[tuple[str, int | None]]:
        with self.sessions() as s:
            rows = s.scalars(
                select(AuditEntry).where(AuditEntry.action.startswith(prefix)).order_by(AuditEntry.id)
            )
            return [(r.action, r.client_id) for r in rows]


@pytest.fixture
def world(sessions: SessionFactory) -> Iterator[World]:
    ids: dict[str, int] = {}
    with sessions.begin() as s:
        for username, role, district in (
            ("care", "care_nurse", ""),
            ("sup", "supervisor", ""),
            ("wijk", "district_nurse", "Zuid"),
        ):
            ids[username] = add_user(
                s, username=username, display_name=username.title(), role=role, district=district,
                password_hash=_password_hash(), now_ms=NOW,
            ).id  # fmt: skip
        jansen = add_client(s, name="Mevr. Jansen", district="Zuid", now_ms=NOW)
        boer = add_client(s, name="Dhr. de Boer", district="Zuid", now_ms=NOW)
        ids |= {"jansen": jansen.id, "boer": boer.id}
        add_device(s, device_id="btn-1", client_id=jansen.id, kind="alarm_button", now_ms=NOW)
        add_device(s, device_id="med-1", client_id=jansen.id, kind="dispenser", label="Medido", now_ms=NOW)
        add_device(s, device_id="btn-2", client_id=boer.id, kind="alarm_button", now_ms=NOW)
    clock = [NOW]
    broadcaster = Broadcaster(sessions, poll_interval_s=0.1)
    ctx = CentralContext(
        sessions=sessions, broadcaster=broadcaster, notify_alerts=broadcaster.wake, clock_ms=lambda: clock[0]
    )
    with TestClient(create_app(ctx)) as api:
        yield World(api, sessions, clock, ids)


def test_a_care_nurse_starts_a_window_it_is_listed_and_audited(world: World) -> None:
    """POST /api/windows starts a client window now; GET lists it as active with who and why; audited."""
    api = world.as_("care")
    response = api.post(
        "/api/windows",
        json={"client_id": world.ids["jansen"], "ends_ms": NOW + 3 * DAY, "reason": "in hospital"},
    )
    assert response.status_code == 201, response.text
    made = response.json()
    assert (made["state"], made["starts_ms"], made["created_by"], made["device"]) == (
        "active",
        NOW,
        "Care",
        None,
    )
    listed = api.get("/api/windows").json()["items"]
    assert [(w["id"], w["client"]["name"], w["reason"], w["ends_ms"]) for w in listed] == [
        (made["id"], "Mevr. Jansen", "in hospital", NOW + 3 * DAY)
    ]
    assert world.audit("window.") == [("window.create", world.ids["jansen"])]


def test_a_district_nurse_may_not_see_or_start_windows(world: World) -> None:
    """Windows belong to the care station's queue: a district nurse is refused (403) and nothing is made."""
    api = world.as_("wijk")
    assert api.get("/api/windows").status_code == 403
    body = {"client_id": world.ids["jansen"], "ends_ms": NOW + DAY, "reason": "in hospital"}
    assert api.post("/api/windows", json=body).status_code == 403
    with world.sessions() as s:
        assert s.scalars(select(MaintenanceWindow)).all() == []


def test_a_broken_rule_is_a_422_that_says_which(world: World) -> None:
    """31 days, both targets, an unknown client or device: 422 with the reason, nothing stored."""
    api = world.as_("sup")
    jansen = world.ids["jansen"]
    for body, words in (
        ({"client_id": jansen, "ends_ms": NOW + 31 * DAY, "reason": "holiday"}, "at most 30 days"),
        (
            {"client_id": jansen, "device_id": "med-1", "ends_ms": NOW + DAY, "reason": "repair"},
            "exactly one",
        ),
        ({"client_id": 999, "ends_ms": NOW + DAY, "reason": "holiday"}, "no client 999"),
        ({"device_id": "med-9", "ends_ms": NOW + DAY, "reason": "repair"}, "no device med-9"),
    ):
        response = api.post("/api/windows", json=body)
        assert response.status_code == 422 and words in response.json()["detail"], response.text
    with world.sessions() as s:
        assert s.scalars(select(MaintenanceWindow)).all() == []


def test_a_client_window_holds_back_device_alerts_and_never_an_alarm(world: World) -> None:
    """In hospital: the dispenser going offline and a dispense error are recorded, not raised; the client's
    alarm comes through all the same, with a note; the window counts what it held back."""
    api = world.as_("care")
    body = {"client_id": world.ids["jansen"], "ends_ms": NOW + DAY, "reason": "in hospital"}
    window_id = api.post("/api/windows", json=body).json()["id"]
    world.clock[0] += MIN
    world.report("med-1", "status", {"online": False})
    world.report("med-1", "dispenser", {"event": "dispense_error"})
    world.report("btn-1", "alarm", {"alarm_kind": "button"})
    assert world.alerts() == [("alarm", "btn-1")]
    assert world.suppressed() == [("offline", "med-1"), ("dispense_error", "med-1")]
    with world.sessions() as s:
        assert "alarms are never held back" in " ".join(s.scalars(select(AlertNote.text)))
    [listed] = api.get("/api/windows").json()["items"]
    assert (listed["id"], listed["suppressed"]) == (window_id, 2)


def test_a_device_window_quiets_that_device_only(world: World) -> None:
    """A window for the dispenser under repair leaves the client's alarm button reporting as usual."""
    api = world.as_("care")
    made = api.post(
        "/api/windows", json={"device_id": "med-1", "ends_ms": NOW + DAY, "reason": "repair"}
    ).json()
    assert (made["client"]["id"], made["device"]["id"], made["device"]["label"]) == (
        world.ids["jansen"],
        "med-1",
        "Medido",
    )
    world.report("med-1", "status", {"online": False})
    world.report("btn-1", "status", {"online": False})
    assert world.suppressed() == [("offline", "med-1")]
    assert world.alerts() == [("offline", "btn-1")]
    # Filtered by client, the device's window is the client's too.
    mine = api.get("/api/windows", params={"client_id": world.ids["jansen"]}).json()["items"]
    theirs = api.get("/api/windows", params={"client_id": world.ids["boer"]}).json()["items"]
    assert ([w["id"] for w in mine], theirs) == ([made["id"]], [])


def test_ending_a_window_early_lets_alerts_through_and_the_timeline_keeps_it_all(world: World) -> None:
    """Ended early, a window stops quieting; ending it twice is 409, an unknown one 404; the client's timeline
    shows the window's start, what it held back, and its early end (by whom)."""
    api = world.as_("care")
    body = {"client_id": world.ids["jansen"], "ends_ms": NOW + DAY, "reason": "in hospital"}
    window_id = api.post("/api/windows", json=body).json()["id"]
    world.clock[0] += HOUR
    world.report("med-1", "status", {"online": False})
    world.clock[0] += HOUR
    ended = api.post(f"/api/windows/{window_id}/end")
    assert ended.status_code == 200, ended.text
    assert (ended.json()["state"], ended.json()["ends_ms"], ended.json()["ended_by"]) == (
        "past",
        NOW + 2 * HOUR,
        "Care",
    )
    assert api.post(f"/api/windows/{window_id}/end").status_code == 409
    assert api.post("/api/windows/424242/end").status_code == 404
    assert api.get("/api/windows").json()["items"] == []
    world.clock[0] += MIN
    world.report("med-1", "dispenser", {"event": "dispense_error"})
    assert world.alerts() == [("dispense_error", "med-1")]

    timeline = api.get(
        f"/api/clients/{world.ids['jansen']}/timeline", params={"reason": "weekly review"}
    ).json()["items"]
    entries = [(e["type"], e["at_ms"]) for e in timeline]
    assert entries == [
        ("alert", NOW + 2 * HOUR + MIN),
        ("window_end", NOW + 2 * HOUR),
        ("suppression", NOW + HOUR),
        ("window", NOW),
    ]
    end, held, start = timeline[1], timeline[2], timeline[3]
    assert (end["early"], end["ended_by"], end["reason"]) == (True, "Care", "in hospital")
    assert (held["kind"], held["device_id"], held["window_reason"]) == ("offline", "med-1", "in hospital")
    assert (start["running"], start["by"], start["ends_ms"]) == (False, "Care", NOW + 2 * HOUR)
    assert world.audit("window.") == [
        ("window.create", world.ids["jansen"]),
        ("window.end", world.ids["jansen"]),
    ]


def test_a_planned_window_waits_and_cancelled_it_never_runs(world: World) -> None:
    """A window planned for tomorrow is upcoming (not history on the timeline); ended before it starts it is
    cancelled: past at once, and tomorrow's alerts are raised."""
    api = world.as_("care")
    body = {"device_id": "med-1", "starts_ms": NOW + DAY, "ends_ms": NOW + 2 * DAY, "reason": "holiday"}
    window_id = api.post("/api/windows", json=body).json()["id"]
    assert [w["id"] for w in api.get("/api/windows", params={"which": "upcoming"}).json()["items"]] == [
        window_id
    ]
    assert api.get("/api/windows", params={"which": "active"}).json()["items"] == []
    cancelled = api.post(f"/api/windows/{window_id}/end").json()
    assert (cancelled["state"], cancelled["ends_ms"]) == ("past", NOW + DAY)
    world.clock[0] += DAY + HOUR
    world.report("med-1", "status", {"online": False})
    assert (world.suppressed(), world.alerts()) == ([], [("offline", "med-1")])
    timeline = api.get(f"/api/clients/{world.ids['jansen']}/timeline", params={"reason": "weekly review"})
    assert [e["type"] for e in timeline.json()["items"]] == ["alert"]


# -- the command line, on both databases ----------------------------------------------------------------


def test_the_command_line_adds_lists_and_ends_windows(
    sessions: SessionFactory, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    """`carealarm windows add|list|end`: a window on behalf of a nurse, listed, ended; a rule broken is a
    message and exit code 1."""
    with sessions.begin() as s:
        client_id = add_client(s, name="Mevr. Jansen", now_ms=NOW).id
        add_user(s, username="care", display_name="Anna", role="care_nurse", password_hash="x", now_ms=NOW)
    monkeypatch.setenv("CAREALARM_DATABASE_URL", db_url)
    monkeypatch.setenv("CAREALARM_DATA_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("CAREALARM_TIMEZONE", "Europe/Amsterdam")
    until = (datetime.now(ZoneInfo("Europe/Amsterdam")) + timedelta(days=2)).replace(second=0, microsecond=0)

    code = main(
        ["windows", "add", "--client", str(client_id), "--until", until.strftime("%Y-%m-%dT%H:%M"),
         "--reason", "in hospital", "--by", "care"]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert (
        code == 0 and "[active]" in out and "Mevr. Jansen" in out and until.strftime("%Y-%m-%d %H:%M") in out
    )
    with sessions() as s:
        row = s.scalars(select(MaintenanceWindow)).one()
    assert (row.client_id, row.device_id, row.ends_ms, row.reason) == (
        client_id,
        None,
        int(until.timestamp() * 1000),
        "in hospital",
    )

    assert main(["windows", "list"]) == 0
    assert f"window {row.id} [active]" in capsys.readouterr().out
    assert main(["windows", "end", str(row.id), "--by", "care"]) == 0
    assert f"ended window {row.id} [past]" in capsys.readouterr().out
    assert main(["windows", "list"]) == 0
    assert capsys.readouterr().out == ""
    assert main(["windows", "list", "--which", "past"]) == 0
    assert f"window {row.id} [past]" in capsys.readouterr().out

    assert main(["windows", "add", "--client", str(client_id), "--for", "31d", "--reason", "holiday"]) == 1
    assert "at most 30 days" in capsys.readouterr().err
    assert main(["windows", "end", str(row.id)]) == 1
    assert "over already" in capsys.readouterr().err
    with sessions() as s:
        assert s.get(MaintenanceWindow, row.id).ended_by is not None  # type: ignore[union-attr]


# -- in the browser ---------------------------------------------------------------------------------------

ZONE = "Europe/Amsterdam"


class Site:
    """central's app under uvicorn (a thread, a free port) over a migrated SQLite file."""

    def __init__(self, tmp_path: Path) -> None:
        url = f"sqlite:///{tmp_path / 'carealarm.sqlite3'}"
        upgrade(url)
        self.engine = make_engine(url)
        self.sessions: SessionFactory = make_session_factory(self.engine)
        now = int(time.time() * 1000)
        with self.sessions.begin() as s:
            self.nurse = add_user(
                s, username="nurse", display_name="Anna de Vries", role="care_nurse",
                password_hash=hash_password("nurse"), now_ms=now,
            ).id  # fmt: skip
            self.jansen = add_client(s, name="Mevr. Jansen", now_ms=now).id
            self.boer = add_client(s, name="Dhr. de Boer", now_ms=now).id
            add_device(
                s, device_id="btn-1", client_id=self.jansen, kind="alarm_button", label="Pendant", now_ms=now
            )
            add_device(
                s, device_id="med-1", client_id=self.jansen, kind="dispenser", label="Medido", now_ms=now
            )
            add_device(
                s, device_id="med-2", client_id=self.boer, kind="dispenser", label="Medido", now_ms=now
            )
        broadcaster = Broadcaster(self.sessions, poll_interval_s=0.2)
        ctx = CentralContext(sessions=self.sessions, broadcaster=broadcaster, notify_alerts=broadcaster.wake)
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        # The live feed notices a closed console only at its next ping (15 s): do not wait for that at exit.
        config = uvicorn.Config(
            create_app(ctx), host="127.0.0.1", port=port, log_level="warning", timeout_graceful_shutdown=1
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="uvicorn", daemon=True)
        self.thread.start()
        wait_for(lambda: self.server.started, 20, what="uvicorn to start")

    def report(self, device_id: str, kind: str, body: dict[str, object], at: int) -> None:
        msg_id = f"{kind}-{at}"
        with self.sessions.begin() as s:
            s.add(
                DeviceEvent(
                    device_id=device_id, msg_id=msg_id, kind=kind, device_ts_ms=at, received_ms=at,
                    payload=json.dumps({"msg_id": msg_id, "ts": at, **body}),
                )
            )  # fmt: skip
        with self.sessions.begin() as s:
            handle_pending_events(s, at)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=20)
        self.engine.dispose()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    playwright_api = pytest.importorskip(
        "playwright.sync_api", reason="BROWSER TESTS NOT RUN: playwright missing"
    )
    if not Path(CHROMIUM).exists():
        pytest.skip(f"BROWSER TESTS NOT RUN: {CHROMIUM} missing (apt-get install chromium)")
    ARTIFACTS.mkdir(exist_ok=True)
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    s = Site(tmp_path)
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
def context(browser: Any) -> Iterator[Any]:
    ctx = browser.new_context(viewport={"width": 1280, "height": 1000}, locale="en-GB", timezone_id=ZONE)
    ctx.add_init_script("localStorage.setItem('lang', 'en')")
    try:
        yield ctx
    finally:
        ctx.close()


@pytest.mark.browser
def test_the_console_lists_adds_and_ends_windows(context: Any, site: Site) -> None:
    """The console's panel lists the running window (and the alarm of that client says so); a nurse adds a
    window for a device through the form, and ends the first one with its button."""
    now = int(time.time() * 1000)
    with site.sessions.begin() as s:
        first = create_window(
            s,
            client_id=site.jansen,
            ends_ms=now + 3 * DAY,
            reason="in hospital",
            user_id=site.nurse,
            now_ms=now,
        ).id
    site.report("btn-1", "alarm", {"alarm_kind": "button"}, now)
    page = context.new_page()
    page.goto(site.url + "/")
    page.fill("#username", "nurse")
    page.fill("#password", "nurse")
    page.click("#login-form button[type=submit]")
    row = page.locator(f"#windows-body tr[data-window='{first}']")
    row.wait_for()
    until = datetime.fromtimestamp((now + 3 * DAY) / 1000, ZoneInfo(ZONE))
    text = row.inner_text()
    assert "Mevr. Jansen" in text and "Whole client" in text and "in hospital" in text, text
    assert until.strftime("%H:%M") in text and str(until.day) in text, text
    page.locator("#open-body tr", has_text="Mevr. Jansen").locator(
        ".window-badge", has_text="in hospital"
    ).wait_for()

    page.click("#window-add summary")
    page.wait_for_selector(f"#w-client option[value='{site.boer}']", state="attached")
    page.select_option("#w-client", str(site.boer))
    page.select_option("#w-device", "med-2")
    page.fill("#w-reason", "dispenser repair")
    tomorrow = (datetime.now(ZoneInfo(ZONE)) + timedelta(days=1)).replace(
        hour=18, minute=0, second=0, microsecond=0
    )
    page.fill("#w-until", tomorrow.strftime("%Y-%m-%dT%H:%M"))
    page.click("#window-form button[type=submit]")
    added = page.locator("#windows-body tr", has_text="dispenser repair")
    added.wait_for()
    assert "Dhr. de Boer" in added.inner_text() and "med-2" in added.inner_text()
    with site.sessions() as s:
        made = s.scalars(select(MaintenanceWindow).where(MaintenanceWindow.device_id == "med-2")).one()
    assert (made.client_id, made.ends_ms, made.created_by) == (
        None,
        int(tomorrow.timestamp() * 1000),
        site.nurse,
    )
    page.screenshot(path=str(ARTIFACTS / "windows-console.png"), full_page=True)

    page.once("dialog", lambda dialog: dialog.accept())
    row.get_by_role("button", name="End").click()
    row.wait_for(state="detached")
    page.locator("#open-body .window-badge").wait_for(state="detached")
    with site.sessions() as s:
        assert s.get(MaintenanceWindow, first).ended_by == site.nurse  # type: ignore[union-attr]
    page.select_option("select.lang-switch", "nl")
    page.locator("#windows-title", has_text="Meldingspauzes").wait_for()
    assert page.text_content("#w-client option:first-child") == "Kies een cliënt"
    assert page.text_content("#w-device option:first-child") == "Hele cliënt"
    page.screenshot(path=str(ARTIFACTS / "windows-console-nl.png"), full_page=True)


@pytest.mark.browser
def test_the_client_timeline_shows_the_window_and_what_it_held_back(context: Any, site: Site) -> None:
    """On the client page: the window's start, the offline report it held back, and its early end."""
    now = int(time.time() * 1000)
    with site.sessions.begin() as s:
        window_id = create_window(
            s, client_id=site.jansen, ends_ms=now + DAY, reason="in hospital", user_id=site.nurse,
            now_ms=now - 3 * HOUR,
        ).id  # fmt: skip
    site.report("med-1", "status", {"online": False}, now - 2 * HOUR)
    with site.sessions.begin() as s:
        end_window(s, window_id=window_id, user_id=site.nurse, now_ms=now - HOUR)
    response = context.request.post(
        site.url + "/api/session", data={"username": "nurse", "password": "nurse"}
    )
    assert response.status == 200
    page = context.new_page()
    page.goto(f"{site.url}/static/client.html?id={site.jansen}")
    page.fill("#reason-text", "Check after hospital stay")
    page.click("#reason-form button[type=submit]")
    page.wait_for_selector("#timeline li")
    types = page.eval_on_selector_all("#timeline li", "els => els.map(e => e.dataset.type)")
    assert types == ["window_end", "suppression", "window"]
    items = page.locator("#timeline li")
    assert "Maintenance window over: in hospital" in items.nth(0).inner_text()
    assert "ended early by Anna de Vries" in items.nth(0).inner_text()
    assert "Held back by a maintenance window: Device offline" in items.nth(1).inner_text()
    assert "Maintenance window: in hospital" in items.nth(2).inner_text()
    assert "alarms always come through" in items.nth(2).inner_text()
    page.screenshot(path=str(ARTIFACTS / "windows-client-timeline.png"), full_page=True)
