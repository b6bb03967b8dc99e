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
from storage.models import Alert, DeviceEvent, DoseInstance, ServiceRun
from storage.registry import add_client, add_device, add_user

pytestmark = pytest.mark.browser

playwright_api = pytest.importorskip(
    "playwright.sync_api", reason="BROWSER TESTS NOT RUN: playwright missing"
)

HOUR = 3_600_000
DAY = 24 * HOUR


def seed(sessions: SessionFactory, now_ms: int) -> None:
    """Six days of alarms (one day under target, with an unanswered alarm; a client's cancel on another),
    three clients' doses (one reported only by the dispenser), three devices' status reports, and the
    gateway's runs with two hours of downtime between them."""
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
        # 03:30 UTC stays on its calendar day from UTC-3 to UTC+12, like the alarms above.
        s.add(
            Alert(
                client_id=clients[0],
                kind="alarm",
                priority=1,
                state="open",
                opened_ms=start + 2 * DAY + HOUR // 2,
                last_event_ms=start + 2 * DAY + HOUR // 2,
            )
        )
        s.add(
            Alert(
                client_id=clients[1],
                kind="alarm",
                priority=1,
                state="resolved",
                opened_ms=start + 4 * DAY + HOUR // 2,
                last_event_ms=start + 4 * DAY + HOUR // 2,
                resolved_ms=start + 4 * DAY + HOUR // 2 + 10_000,
                outcome="cancelled_by_client",
            )
        )
        s.add(
            Alert(
                client_id=clients[0],
                kind="missed_dose",
                priority=3,
                state="open",
                opened_ms=start + 3 * DAY + 9 * HOUR,
                last_event_ms=start + 3 * DAY + 9 * HOUR,
                subject="device-dose:extra",
            )
        )
        s.add(
            ServiceRun(
                component="gateway", instance="gw1", started_ms=start - 2 * DAY, last_beat_ms=start + 3 * DAY
            )
        )
        s.add(
            ServiceRun(
                component="gateway",
                instance="gw1",
                started_ms=start + 3 * DAY + 2 * HOUR,
                last_beat_ms=now_ms,
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


def test_reports_page_shows_misses_cancels_unscheduled_doses_and_service_downtime(page: object) -> None:
    """The new columns carry the figures the old page hid: an unanswered alarm, a client's cancel, a dose
    only the dispenser reported, and the service's own downtime."""
    p = page
    answer = p.inner_text("#table-answer")  # type: ignore[attr-defined]
    assert "Cancelled by client" in answer
    totals = p.locator("#table-answer tbody tr.total")  # type: ignore[attr-defined]
    rows = [totals.nth(i).inner_text().split("\t") for i in range(totals.count())]
    assert sorted((r[3], r[4]) for r in rows) == [("0", "0")] * 4 + [("0", "1"), ("1", "0")]
    adherence = p.locator("#table-adherence tbody tr", has_text="Mevr. Jansen").inner_text()  # type: ignore[attr-defined]
    assert "Not in schedule" in p.inner_text("#table-adherence thead")  # type: ignore[attr-defined]
    assert adherence.split("\t")[6] == "1"
    assert "Service down" in p.inner_text("#table-uptime thead")  # type: ignore[attr-defined]
    uptime_rows = p.locator("#table-uptime tbody tr")  # type: ignore[attr-defined]
    assert [uptime_rows.nth(i).inner_text().split("\t")[7] for i in range(3)] == ["2.0 h"] * 3


def test_each_figure_has_its_definition_next_to_it_in_english_and_dutch(page: object) -> None:
    """Every column of every report is defined under its table; in Dutch the definitions are Dutch."""
    p = page
    for report in ("answer", "adherence", "uptime"):
        terms = p.locator(f"#{report} dl.definitions dt").all_inner_texts()  # type: ignore[attr-defined]
        headers = p.locator(f"#table-{report} thead th").all_inner_texts()  # type: ignore[attr-defined]
        figures = [h for h in headers if h not in ("Day", "Client", "Device", "Kind")]
        assert terms == figures, report
        assert all(d.strip() for d in p.locator(f"#{report} dl.definitions dd").all_inner_texts())  # type: ignore[attr-defined]
    english = p.inner_text("#answer dl.definitions")  # type: ignore[attr-defined]
    assert "counts as a miss" in english and "cancelled by the client" in english
    assert "service itself was down" in p.inner_text("#uptime dl.definitions")  # type: ignore[attr-defined]

    p.select_option("select.lang-switch", "nl")  # type: ignore[attr-defined]
    for report in ("answer", "adherence", "uptime"):
        dutch = p.locator(f"#{report} dl.definitions dd").all_inner_texts()  # type: ignore[attr-defined]
        untranslated = [d for d in dutch if d in english or " the " in d]
        assert not untranslated, untranslated
    assert "telt als gemist" in p.inner_text("#answer dl.definitions")  # type: ignore[attr-defined]
    assert "Dienst uit de lucht" in p.inner_text("#table-uptime thead")  # type: ignore[attr-defined]
    p.screenshot(path=str(ARTIFACTS / "reports-definitions-nl.png"), full_page=True)  # type: ignore[attr-defined]
