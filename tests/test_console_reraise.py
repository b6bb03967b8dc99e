"""A second alarm is never silent: the console in Debian's headless Chromium against the real app.

central's app runs under a real uvicorn (a thread, a free port) over a migrated SQLite file; alarms arrive as
stored device events handled by the monitor's own code (``monitor.events.handle_pending_events``), so the
console sees exactly what the live feed sends. The sound is read from ``window.carealarmSound``, the counter
the console's beep function keeps. Screenshots are kept in test-artifacts/ (console-reraise-*.png).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from helpers import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, free_port, wait_for, wait_in_page
from sqlalchemy import select

from central.app import CentralContext, create_app
from central.auth import hash_password
from central.feed import Broadcaster
from monitor.events import handle_pending_events
from storage.db import SessionFactory, make_engine, make_session_factory, upgrade
from storage.models import Alert, DeviceEvent
from storage.registry import add_client, add_device, add_user

pytestmark = pytest.mark.browser

playwright_api = pytest.importorskip(
    "playwright.sync_api", reason="BROWSER TESTS NOT RUN: playwright missing"
)
uvicorn = pytest.importorskip("uvicorn")

# The browser runs in this zone, so the test knows which HH:MM the console prints.
ZONE = "Europe/Amsterdam"


class Site:
    """central's app under uvicorn over a migrated SQLite file; devices' alarms go through the monitor."""

    def __init__(self, tmp_path: Path) -> None:
        url = f"sqlite:///{tmp_path / 'carealarm.sqlite3'}"
        upgrade(url)
        self.engine = make_engine(url)
        self.sessions: SessionFactory = make_session_factory(self.engine)
        self.seq = 0
        now = int(time.time() * 1000)
        with self.sessions.begin() as s:
            add_user(
                s,
                username="nurse",
                display_name="Anna de Vries",
                role="care_nurse",
                password_hash=hash_password("nurse"),
                now_ms=now,
            )
            for n, name in ((1, "Mevr. Jansen"), (2, "Dhr. de Boer"), (3, "Mevr. Bakker")):
                client = add_client(s, name=name, address=f"Dorpsstraat {n}", now_ms=now)
                add_device(
                    s,
                    device_id=f"btn-{n}",
                    client_id=client.id,
                    kind="alarm_button",
                    label="Pendant",
                    now_ms=now,
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

    def press(self, device_id: str, alarm_kind: str = "button", ago_s: float = 0) -> int:
        """The device's alarm as the gateway stores it, then handled by the monitor; returns when it was."""
        self.seq += 1
        at = int(time.time() * 1000 - ago_s * 1000)
        msg_id = f"m{self.seq}"
        with self.sessions.begin() as s:
            s.add(
                DeviceEvent(
                    device_id=device_id,
                    msg_id=msg_id,
                    kind="alarm",
                    device_ts_ms=at,
                    received_ms=at,
                    payload=json.dumps({"msg_id": msg_id, "ts": at, "alarm_kind": alarm_kind}),
                )
            )
        with self.sessions.begin() as s:
            handle_pending_events(s, int(time.time() * 1000))
        return at

    def alarms(self) -> list[Alert]:
        with self.sessions() as s:
            return list(s.scalars(select(Alert).where(Alert.kind == "alarm").order_by(Alert.id)))

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=20)
        self.engine.dispose()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
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
    """A browser context in a known zone and language; closed (with its consoles) whatever happens."""
    ctx = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-GB", timezone_id=ZONE)
    ctx.add_init_script("localStorage.setItem('lang', 'en')")
    try:
        yield ctx
    finally:
        ctx.close()


def _console(context: Any, site: Site) -> Any:
    """A nurse signs in through the console's form (a touch of the page: the browser lets it sound)."""
    page = context.new_page()
    page.goto(site.url + "/")
    page.fill("#username", "nurse")
    page.fill("#password", "nurse")
    page.click("#login-form button[type=submit]")
    page.wait_for_selector("#conn.conn-up")
    return page


def _hhmm(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, ZoneInfo(ZONE)).strftime("%H:%M")


def _sounds(page: Any) -> int:
    return int(page.evaluate("window.carealarmSound.played"))


def _open_clients(page: Any) -> list[str]:
    return list(page.eval_on_selector_all("#open-body tr .client", "els => els.map(e => e.textContent)"))


def test_a_repeat_press_on_an_open_alarm_sounds_and_goes_to_the_top(context: Any, site: Site) -> None:
    """Two clients wait; the later one presses again (a fall detected): the console sounds, the row shows
    the fall, "×2 · last HH:MM", and it moves above the alarm that waits longer with one press."""
    site.press("btn-1", ago_s=40)
    site.press("btn-2", ago_s=20)
    page = _console(context, site)
    wait_in_page(page, "document.querySelectorAll('#open-body tr').length === 2")
    assert _open_clients(page) == ["Mevr. Jansen", "Dhr. de Boer"]
    before = _sounds(page)
    assert before >= 1  # the two alarms waiting when the console opened sounded too

    again = site.press("btn-2", alarm_kind="fall")
    [_, boer] = site.alarms()
    assert (boer.count, boer.state) == (2, "open")  # the monitor counted the press on the open alarm
    wait_in_page(page, f"window.carealarmSound.played > {before}")
    row = page.locator("#open-body tr", has_text="Dhr. de Boer")
    row.locator(".count").wait_for()
    assert page.evaluate("window.carealarmSound.last") == "raised again"
    text = row.inner_text()
    assert "Fall detected" in text and "Alarm button pressed" not in text, text
    assert f"×2 · last {_hhmm(again)}" in text, text
    assert _open_clients(page) == ["Dhr. de Boer", "Mevr. Jansen"]
    assert "raised-again" in (row.get_attribute("class") or "")
    page.screenshot(path=str(ARTIFACTS / "console-reraise-repeat.png"), full_page=True)


def test_a_new_alarm_while_the_first_is_in_progress_sounds_and_names_who_helps(
    context: Any, site: Site
) -> None:
    """The nurse takes Mevr. Jansen's alarm; she presses again: a new open alarm sounds, saying the client is
    already being helped, by whom and since when (and in Dutch); it waits behind a client nobody answered."""
    site.press("btn-3", ago_s=60)  # another client, waiting longer
    site.press("btn-1", ago_s=30)
    page = _console(context, site)
    wait_in_page(page, "document.querySelectorAll('#open-body tr').length === 2")
    page.locator("#open-body tr", has_text="Mevr. Jansen").get_by_role("button", name="Acknowledge").click()
    page.locator("#progress-body tr", has_text="Mevr. Jansen").wait_for()
    [bakker_alarm, first] = site.alarms()
    assert first.acknowledged_ms is not None
    before = _sounds(page)

    site.press("btn-1", alarm_kind="pendant")
    second = site.alarms()[-1]
    assert (second.state, second.incident_alert_id) == ("open", first.id)  # a new alert, in the incident
    wait_in_page(page, f"window.carealarmSound.played > {before}")
    assert page.evaluate("window.carealarmSound.last") == "new alarm"
    row = page.locator(f"#open-body tr[data-id='{second.id}']")
    row.wait_for()
    since = _hhmm(first.acknowledged_ms)
    expected = f"Client already being helped — alarm in progress by Anna de Vries since {since}"
    assert expected in row.inner_text(), row.inner_text()
    # A new alarm waits its turn behind the one waiting longer: first press orders the queue.
    assert page.eval_on_selector_all("#open-body tr", "els => els.map(e => Number(e.dataset.id))") == [
        bakker_alarm.id,
        second.id,
    ]
    assert page.locator("#progress-body tr", has_text="Mevr. Jansen").count() == 1
    page.screenshot(path=str(ARTIFACTS / "console-reraise-incident.png"), full_page=True)

    page.select_option("select.lang-switch", "nl")
    nl = f"Cliënt wordt al geholpen — alarm in behandeling bij Anna de Vries sinds {since}"
    page.locator(
        f"#open-body tr[data-id='{second.id}'] .incident", has_text="Cliënt wordt al geholpen"
    ).wait_for()
    assert nl in page.locator(f"#open-body tr[data-id='{second.id}']").inner_text()
    page.screenshot(path=str(ARTIFACTS / "console-reraise-incident-nl.png"), full_page=True)


def test_a_console_reopened_without_a_touch_says_the_sound_is_off(context: Any, site: Site) -> None:
    """A console reloaded with a remembered sign-in may not sound until touched (the browser's rule): a
    banner says so, and one click anywhere turns the sound on."""
    response = context.request.post(
        site.url + "/api/session", data={"username": "nurse", "password": "nurse"}
    )
    assert response.status == 200, response.text()
    page = context.new_page()
    page.goto(site.url + "/")
    page.wait_for_selector("#sound-off", state="visible")
    assert page.evaluate("window.carealarmSound.audible") is False
    page.screenshot(path=str(ARTIFACTS / "console-sound-off.png"))
    page.click("#sound-off")
    page.wait_for_selector("#sound-off", state="hidden")
    assert page.evaluate("window.carealarmSound.audible") is True
