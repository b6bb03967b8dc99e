"""Sound and attention (#14 item 5): the console in Debian's headless Chromium against the real app.

An open alarm sounds again until it is taken, more urgently past the answer targets; mute silences the
speaker but never the screen; a new alarm is announced to screen readers and, while the tab is hidden,
shown as a desktop notification. The sound module keeps its counters on ``window.carealarmSound``; its clock
(repeat interval, urgency thresholds) is shortened through ``configure`` so each test takes seconds.

The console's own site and alarms come from test_console_reraise (``Site``: uvicorn over SQLite, alarms
stored as device events and handled by the monitor's code). Screenshots: test-artifacts/console-attention-*.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, wait_in_page
from test_console_reraise import ZONE, Site

from monitor.events import handle_pending_events
from storage.models import DeviceEvent

pytestmark = pytest.mark.browser

playwright_api = pytest.importorskip(
    "playwright.sync_api", reason="BROWSER TESTS NOT RUN: playwright missing"
)

# Seconds, not minutes: a reminder every 0.3 s, the urgent tones after 1 s and 2 s of waiting.
FAST = "window.carealarmSound.configure({repeatMs: 300, urgentAfterS: [1, 2]})"

# Headless Chromium has no window to hide: every page is "visible". The console reads
# document.visibilityState, so the test overrides it (a switch the test flips, then the event a real hide
# fires), and records each Notification the page constructs and each window.focus() (a click on one).
# Init scripts run through the debugging protocol, outside the page's Content-Security-Policy.
HIDE_AND_RECORD = """
window.__hidden = false;
Object.defineProperty(Document.prototype, "visibilityState",
  { configurable: true, get() { return window.__hidden ? "hidden" : "visible"; } });
Object.defineProperty(Document.prototype, "hidden",
  { configurable: true, get() { return window.__hidden; } });
window.__shown = [];
window.__focused = 0;
const RealNotification = window.Notification;
window.Notification = class extends RealNotification {
  constructor(title, options) {
    super(title, options);
    window.__shown.push({ title, body: options.body, tag: options.tag, closed: false, n: this });
    const close = this.close.bind(this);
    this.close = () => { window.__shown.find((s) => s.n === this).closed = true; close(); };
  }
};
const realFocus = window.focus.bind(window);
window.focus = () => { window.__focused += 1; realFocus(); };
"""
HIDE = "window.__hidden = true; document.dispatchEvent(new Event('visibilitychange'))"


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
        # The live feed notices a closed console only at its next ping: five tests need not wait 1 s each.
        s.server.config.timeout_graceful_shutdown = 0.1
        s.stop()


@pytest.fixture
def context(browser: Any) -> Iterator[Any]:
    """English, a known zone, hidden on demand; notifications are granted by the test that needs them.
    Tests ask for it after ``site``, so it closes first and the server stops without waiting on a feed."""
    ctx = browser.new_context(
        viewport={"width": 1280, "height": 800},
        locale="en-GB",
        timezone_id=ZONE,
    )
    ctx.add_init_script("localStorage.setItem('lang', localStorage.getItem('lang') || 'en')")
    ctx.add_init_script(HIDE_AND_RECORD)
    try:
        yield ctx
    finally:
        ctx.close()


def _console(context: Any, site: Site) -> Any:
    page = context.new_page()
    page.goto(site.url + "/")
    page.fill("#username", "nurse")
    page.fill("#password", "nurse")
    page.click("#login-form button[type=submit]")
    page.wait_for_selector("#conn.conn-up")
    page.evaluate(FAST)
    return page


def _fault(site: Site, device_id: str, fault: str) -> None:
    """A device fault as the gateway stores it, handled by the monitor."""
    site.seq += 1
    at = int(time.time() * 1000)
    msg_id = f"f{site.seq}"
    with site.sessions.begin() as s:
        s.add(
            DeviceEvent(
                device_id=device_id,
                msg_id=msg_id,
                kind="fault",
                device_ts_ms=at,
                received_ms=at,
                payload=json.dumps({"msg_id": msg_id, "ts": at, "fault": fault}),
            )
        )
    with site.sessions.begin() as s:
        handle_pending_events(s, int(time.time() * 1000))


def _sound(page: Any, name: str) -> Any:
    return page.evaluate(f"window.carealarmSound.{name}")


def _reminder_tones(page: Any) -> list[str]:
    return list(
        page.evaluate("window.carealarmSound.history.filter(h => h.why === 'reminder').map(h => h.tone)")
    )


def test_an_open_alarm_sounds_again_more_urgently_until_it_is_taken(site: Site, context: Any) -> None:
    """The alarm sounds when it arrives, again at each interval, with the 60 s tone past the first threshold
    and the 180 s tone past the second; once acknowledged it is quiet."""
    page = _console(context, site)
    site.press("btn-1")
    wait_in_page(page, "window.carealarmSound.last === 'new alarm'", 10)
    assert _sound(page, "tone") == "alarm"
    wait_in_page(page, "window.carealarmSound.repeats >= 2", 5)
    wait_in_page(page, "window.carealarmSound.urgency === 1", 5)
    wait_in_page(page, "window.carealarmSound.urgency === 2 && window.carealarmSound.tone === 'alarm_180'", 5)
    tones = _reminder_tones(page)
    # Reminders only climb: the plain tone, then the 60 s tone, then the 180 s tone.
    assert tones[0] == "alarm" and "alarm_60" in tones, tones
    order = ["alarm", "alarm_60", "alarm_180"]
    assert [order.index(t) for t in tones] == sorted(order.index(t) for t in tones), tones
    assert _sound(page, "played") == 1  # reminders are not news: "played" still counts the press once

    page.get_by_role("button", name="Acknowledge").click()
    page.locator("#progress-body tr", has_text="Mevr. Jansen").wait_for()
    wait_in_page(page, "window.carealarmSound.urgency === 0", 5)
    repeats = _sound(page, "repeats")
    time.sleep(0.7)  # more than two reminder intervals
    assert _sound(page, "repeats") == repeats


def test_device_alerts_chime_their_own_tone_once(site: Site, context: Any) -> None:
    """A device fault (priority 3) chimes the device tone when new and does not repeat; a low battery
    (priority 4) stays silent."""
    page = _console(context, site)
    _fault(site, "btn-2", "hardware")
    wait_in_page(page, "window.carealarmSound.tone === 'device'", 10)
    sounds = _sound(page, "sounds")
    _fault(site, "btn-3", "battery_low")
    page.locator("#open-body tr", has_text="Mevr. Bakker").wait_for()
    time.sleep(0.7)  # more than two reminder intervals
    assert _sound(page, "sounds") == sounds
    assert (_sound(page, "repeats"), _sound(page, "played")) == (0, 0)


def test_mute_silences_the_speaker_but_not_the_screen(site: Site, context: Any) -> None:
    """Muted, kept over a reload: the alarm row, and a red "muted" mark in the header while it waits;
    the volume is a visible slider kept as well, and cannot be slid to silence."""
    page = _console(context, site)
    page.fill("#sound-volume", "80")
    page.click("#sound-mute")
    assert _sound(page, "muted") is True
    page.reload()
    page.wait_for_selector("#conn.conn-up")
    assert (_sound(page, "muted"), _sound(page, "volume")) == (True, 80)
    assert page.get_attribute("#sound-mute", "aria-pressed") == "true"
    mark = page.locator("#sound-muted")
    assert mark.is_visible() and mark.inner_text() == "Muted"

    site.press("btn-1")
    page.locator("#open-body tr", has_text="Mevr. Jansen").wait_for()
    wait_in_page(page, "document.querySelector('#sound-muted').classList.contains('alarm-open')", 5)
    assert mark.is_visible() and mark.inner_text() == "Muted — alarm waiting"
    assert page.locator("#open-body tr", has_text="Mevr. Jansen").is_visible()
    page.locator("header").screenshot(path=str(ARTIFACTS / "console-attention-header-muted.png"))
    page.screenshot(path=str(ARTIFACTS / "console-attention-muted.png"))

    page.fill("#sound-volume", "0")
    assert _sound(page, "volume") == 10
    page.click("#sound-mute")
    assert mark.is_hidden() and _sound(page, "muted") is False
    page.locator("header").screenshot(path=str(ARTIFACTS / "console-attention-header.png"))


def test_a_new_alarm_is_announced_to_screen_readers_in_the_nurses_language(site: Site, context: Any) -> None:
    """An assertive live region says "New alarm: <what> — <client>", in Dutch once the console is."""
    page = _console(context, site)
    region = page.locator("#announcer")
    assert region.get_attribute("aria-live") == "assertive"
    site.press("btn-1", alarm_kind="fall")
    wait_in_page(page, "window.carealarmSound.announced >= 1", 10)
    assert region.text_content() == "New alarm: Fall detected — Mevr. Jansen"

    page.select_option("select.lang-switch", "nl")
    site.press("btn-2")
    wait_in_page(page, "window.carealarmSound.announced >= 2", 10)
    assert region.text_content() == "Nieuw alarm: Alarm button pressed — Dhr. de Boer"
    assert page.locator("#sound-mute").inner_text() == "Geluid dempen"


def test_a_hidden_console_shows_one_desktop_notification_per_new_alarm(site: Site, context: Any) -> None:
    """Turned on by a click; none while the console is in view; hidden, a new alarm shows one notification
    (a repeat press does not add another), and a click on it brings the console forward and closes it."""
    page = _console(context, site)
    ask = page.locator("#notify-on")
    assert ask.inner_text() == "Turn on desktop alerts" and ask.is_enabled()
    # The browser's own question, answered "allow" (headless Chromium shows no prompt).
    context.grant_permissions(["notifications"], origin=site.url)
    ask.click()
    wait_in_page(page, "document.querySelector('#notify-on').disabled", 5)
    assert ask.inner_text() == "Desktop alerts on"

    site.press("btn-1")
    wait_in_page(page, "window.carealarmSound.played >= 1", 10)
    assert page.evaluate("window.__shown.length") == 0  # in view: the screen and the sound are enough

    page.evaluate(HIDE)
    site.press("btn-2")
    wait_in_page(page, "window.__shown.length === 1", 10)
    shown = page.evaluate("({title: window.__shown[0].title, body: window.__shown[0].body})")
    assert shown == {"title": "New alarm", "body": "Alarm button pressed — Dhr. de Boer"}
    played = _sound(page, "played")
    site.press("btn-2", alarm_kind="fall")
    wait_in_page(page, f"window.carealarmSound.played > {played}", 10)
    assert page.evaluate("window.__shown.length") == 1
    assert _sound(page, "notifications") == 1

    page.evaluate("window.__shown[0].n.dispatchEvent(new Event('click'))")
    assert page.evaluate("window.__focused") == 1
    assert page.evaluate("window.__shown[0].closed")
