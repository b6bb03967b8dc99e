"""The supervisor's audit page in Debian's headless Chromium against a real uvicorn: rows, filters, CSV link.

Screenshots are kept in test-artifacts/ (audit-en.png, audit-nl.png).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from helpers import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, free_port, wait_for

from central import audit
from central.app import CentralContext, create_app
from central.auth import hash_password
from central.feed import Broadcaster
from storage.db import make_engine, make_session_factory, upgrade
from storage.registry import add_client, add_user

pytestmark = pytest.mark.browser

playwright_api = pytest.importorskip(
    "playwright.sync_api", reason="BROWSER TESTS NOT RUN: playwright missing"
)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    """Central on a real uvicorn over SQLite: a supervisor, two nurses, two clients and their audit rows."""
    url = f"sqlite:///{tmp_path / 'carealarm.sqlite3'}"
    upgrade(url)
    engine = make_engine(url)
    sessions = make_session_factory(engine)
    now = int(time.time() * 1000)
    with sessions.begin() as s:
        sup = add_user(
            s,
            username="sup",
            display_name="Sanne Supervisor",
            role="supervisor",
            password_hash=hash_password("sup-password"),
            now_ms=now,
        )
        anna = add_user(
            s,
            username="anna",
            display_name="Anna de Wit",
            role="care_nurse",
            password_hash=hash_password("x-password-1"),
            now_ms=now,
        )
        wijk = add_user(
            s,
            username="wijk",
            display_name="Wendy Wijk",
            role="district_nurse",
            district="Zuid",
            password_hash=hash_password("x-password-2"),
            now_ms=now,
        )
        jansen = add_client(s, name="Mevr. Jansen", district="Zuid", now_ms=now)
        boer = add_client(s, name="Dhr. de Boer", district="Centrum", now_ms=now)
        s.flush()
        rows = [
            (anna.id, "alert.list", None, None, "3 alerts of 2 clients"),
            (anna.id, "client.read", jansen.id, None, ""),
            (wijk.id, "client.read", jansen.id, "weekly round", ""),
            (wijk.id, "client.read.refused", boer.id, None, f"client {boer.id} is outside your district"),
            (anna.id, "monitoring.start", boer.id, None, "call 4f2a"),
            (anna.id, "monitoring.end", boer.id, None, "call 4f2a: hangup after 42 s"),
            (sup.id, "report.read", None, None, "adherence csv"),
        ]
        for i, (user, action, client, reason, detail) in enumerate(rows):
            audit.record(
                s,
                user,
                action,
                now_ms=now - (len(rows) - i) * 60_000,
                client_id=client,
                reason=reason,
                detail=detail,
            )
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


def test_audit_page_lists_filters_and_exports(server: str) -> None:
    """A supervisor signs in, sees every row, filters to one client, gets a CSV link with those filters."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"BROWSER TESTS NOT RUN: {CHROMIUM} missing (apt-get install chromium)")
    ARTIFACTS.mkdir(exist_ok=True)
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-GB").new_page()
            page.goto(server + "/static/audit.html")
            page.fill("#username", "sup")
            page.fill("#password", "sup-password")
            page.click("#login-form button[type=submit]")
            page.wait_for_selector("body[data-loaded=true]")
            actions = page.locator("#rows tbody tr td:nth-child(3)").all_text_contents()
            # Newest first; the page's own reads (users, clients) are on the record too.
            assert "monitoring.end" in actions and "client.read.refused" in actions
            page.select_option("#f-client", label="Dhr. de Boer")
            page.click("#filters button[type=submit]")
            playwright_api.expect(page.locator("#rows tbody tr")).to_have_count(3)
            shown = page.locator("#rows tbody tr td:nth-child(3)").all_text_contents()
            assert shown == ["monitoring.end", "monitoring.start", "client.read.refused"]
            href = page.get_attribute("#csv", "href") or ""
            assert "format=csv" in href and "client_id=" in href
            csv_text = page.request.get(server + href).text()
            assert csv_text.splitlines()[0].startswith("id,at_ms,at_utc,user_id")
            # The three rows, and the supervisor's own look at this client's rows (audit.read).
            lines = csv_text.strip().splitlines()
            assert len(lines) == 5 and ",audit.read," in lines[1]
            page.screenshot(path=str(ARTIFACTS / "audit-en.png"), full_page=True)
            page.select_option(".lang-switch", "nl")
            page.wait_for_selector("text=Wie heeft wat ingezien")
            page.screenshot(path=str(ARTIFACTS / "audit-nl.png"), full_page=True)
        finally:
            browser.close()
