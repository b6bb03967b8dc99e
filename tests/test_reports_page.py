"""The reports page in Debian's headless Chromium against a real uvicorn: SVG charts with data, then Dutch.

Screenshots are kept in test-artifacts/ (reports-en.png, reports-nl.png, manage-nl.png).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import uvicorn
from helpers import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, free_port, wait_for

from central.app import CentralContext, create_app
from central.auth import hash_password
from central.feed import Broadcaster
from storage.db import SessionFactory, make_engine, make_session_factory, upgrade
from storage.models import Alert, DeviceEvent, DoseInstance
from storage.registry import add_client, add_device, add_user

pytestmark = pytest.mark.browser

playwright_api = pytest.importorskip(
    "playwright.sync_api", reason="BROWSER TESTS NOT RUN: playwright missing"
)

HOUR = 3_600_000
DAY = 24 * HOUR


def seed(sessions: SessionFactory, now_ms: int) -> None:
    """Six days of alarms (one day under target), three clients' doses, three devices' status reports."""
    # Day starts at 03:00 UTC: the eight alarms of a day (04:00-11:00 UTC) stay on one calendar day in any
    # time zone from UTC-3 to UTC+12, whatever the hour the test runs at.
    start = now_ms - now_ms % DAY - 6 * DAY + 3 * HOUR
    with sessions.begin() as s:
        nurses = [
            add_user(
                s,
                username=u,
                display_name=name,
                role=role,
                password_hash=hash_password(f"{u}-password"),
                now_ms=start - DAY,
            ).id
            for u, name, role in (
                ("sup", "Sanne Supervisor", "supervisor"),
                ("anna", "Anna de Wit", "care_nurse"),
                ("bram", "Bram Jansen", "care_nurse"),
            )
        ]
        clients = [
            add_client(s, name=n, now_ms=start - DAY).id
            for n in ("Mevr. Jansen", "Dhr. de Vries", "Mevr. Bakker")
        ]
        for i, cid in enumerate(clients):
            add_device(
                s,
                device_id=f"btn-{i + 1}",
                client_id=cid,
                kind="alarm_button",
                label="Pendant",
                now_ms=start - DAY,
            )
        for day in range(6):
            for k in range(8):
                # Day 2 has slow answers: below the 97.5% line.
                wait_s = 150 if day == 2 and k < 3 else 20 + 5 * k
                opened = start + day * DAY + (k + 1) * HOUR
                s.add(
                    Alert(
                        client_id=clients[k % 3],
                        kind="alarm",
                        priority=1,
                        state="resolved",
                        opened_ms=opened,
                        last_event_ms=opened,
                        acknowledged_ms=opened + wait_s * 1000,
                        acknowledged_by=nurses[1 + k % 2],
                        resolved_ms=opened + 600_000,
                        outcome="talked_to_client",
                    )
                )
            for cid, states in zip(clients, ("tttt", "ttlm", "tmmm"), strict=True):
                for j, state in enumerate(states):
                    st = {"t": "taken", "l": "taken_late", "m": "missed"}[state]
                    s.add(
                        DoseInstance(
                            client_id=cid, dose_id=f"d{j}", due_ms=start + day * DAY + j * 4 * HOUR, state=st
                        )
                    )
        for i, offline_hours in enumerate((0, 10, 40)):
            events = [(start - DAY, True)]
            if offline_hours:
                events += [(start + DAY, False), (start + DAY + offline_hours * HOUR, True)]
            for at, online in events:
                s.add(
                    DeviceEvent(
                        device_id=f"btn-{i + 1}",
                        msg_id=f"~status-{at}-{online}",
                        kind="status",
                        device_ts_ms=at,
                        received_ms=at,
                        payload=json.dumps({"online": online}),
                        handled_ms=at,
                    )
                )


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    """The central app on a real uvicorn (its own thread, a free port) over a seeded SQLite database."""
    url = f"sqlite:///{tmp_path / 'carealarm.sqlite3'}"
    upgrade(url)
    engine = make_engine(url)
    sessions = make_session_factory(engine)
    seed(sessions, int(time.time() * 1000))
    broadcaster = Broadcaster(sessions, poll_interval_s=0.5)
    app = create_app(
        CentralContext(sessions=sessions, broadcaster=broadcaster, notify_alerts=broadcaster.wake)
    )
    port = free_port()
    uv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=uv.run, name="uvicorn", daemon=True)
    thread.start()
    wait_for(lambda: uv.started, 15, what="uvicorn to start")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        uv.should_exit = True
        thread.join(timeout=10)
        engine.dispose()


@pytest.fixture
def page(server: str) -> Iterator[object]:
    if not Path(CHROMIUM).exists():
        pytest.skip(
            f"BROWSER TESTS NOT RUN: {CHROMIUM} missing (apt-get install chromium; `make test` does it)"
        )
    ARTIFACTS.mkdir(exist_ok=True)
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1280, "height": 1900}, locale="en-GB")
        page = context.new_page()
        page.goto(server + "/static/reports.html")
        page.fill("#username", "sup")
        page.fill("#password", "sup-password")
        page.click("#login-form button[type=submit]")
        page.wait_for_selector("body[data-loaded=true]", timeout=10_000)
        yield page
        browser.close()


def test_reports_page_draws_svg_charts_with_data_and_switches_to_dutch(page: object) -> None:
    """Three SVG charts with bars (one day red under the target), tables, CSV links; then Dutch labels."""
    p = page  # playwright's Page; the tests are not type-checked strictly
    assert p.locator("#chart-answer svg rect.bar").count() >= 6  # type: ignore[attr-defined]
    assert p.locator("#chart-answer svg line.target").count() == 1  # type: ignore[attr-defined]
    assert p.locator("#chart-answer svg rect.bar-bad").count() == 1  # type: ignore[attr-defined]
    assert p.locator("#chart-adherence svg rect.bar").count() == 3  # type: ignore[attr-defined]
    assert p.locator("#chart-uptime svg rect.bar").count() == 3  # type: ignore[attr-defined]
    assert "Mevr. Bakker" in p.inner_text("#table-adherence")  # type: ignore[attr-defined]
    assert "format=csv" in p.get_attribute("#csv-uptime", "href")  # type: ignore[attr-defined]
    assert p.text_content("#answer h2") == "Alarm answer times"  # type: ignore[attr-defined]
    p.screenshot(path=str(ARTIFACTS / "reports-en.png"), full_page=True)  # type: ignore[attr-defined]

    p.select_option("select.lang-switch", "nl")  # type: ignore[attr-defined]
    assert p.text_content("#answer h2") == "Aannametijden alarmmeldingen"  # type: ignore[attr-defined]
    assert p.text_content("#adherence h2") == "Therapietrouw (medicatie-inname)"  # type: ignore[attr-defined]
    assert p.text_content("#uptime h2") == "Bereikbaarheid apparaten"  # type: ignore[attr-defined]
    assert "Cliënt" in p.inner_text("#table-adherence thead")  # type: ignore[attr-defined]
    assert "norm 97,5%" in p.text_content("#chart-answer svg")  # type: ignore[attr-defined]
    assert p.evaluate("document.documentElement.lang") == "nl"  # type: ignore[attr-defined]
    p.screenshot(path=str(ARTIFACTS / "reports-nl.png"), full_page=True)  # type: ignore[attr-defined]


def test_language_choice_is_remembered_and_used_by_the_management_page(page: object, server: str) -> None:
    """Dutch chosen on the reports page is kept (localStorage) and shown on the management page."""
    p = page
    p.select_option("select.lang-switch", "nl")  # type: ignore[attr-defined]
    p.goto(server + "/static/manage.html")  # type: ignore[attr-defined]
    p.wait_for_selector("body[data-loaded=true]", timeout=10_000)  # type: ignore[attr-defined]
    assert p.inner_text("[data-tab=clients]") == "Cliënten"  # type: ignore[attr-defined]
    p.click("[data-tab=roster]")  # type: ignore[attr-defined]
    start = (datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%dT07:00")
    end = (datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%dT15:00")
    p.select_option("#shift-user", label="Anna de Wit")  # type: ignore[attr-defined]
    p.fill("#shift-starts", start)  # type: ignore[attr-defined]
    p.fill("#shift-ends", end)  # type: ignore[attr-defined]
    p.click("#shift-form button[type=submit]")  # type: ignore[attr-defined]
    p.wait_for_selector("#roster-table td:has-text('Anna de Wit')", timeout=5_000)  # type: ignore[attr-defined]
    assert "verpleegkundige zorgcentrale" in p.inner_text("#roster-table")  # type: ignore[attr-defined]
    p.screenshot(path=str(ARTIFACTS / "manage-nl.png"), full_page=True)  # type: ignore[attr-defined]
