"""The client page in headless Chromium against a real uvicorn serving central's app on a seeded SQLite file.

Screenshots are kept in test-artifacts/ (client-*.png).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, free_port, wait_for
from sqlalchemy import select

from central.app import CentralContext, create_app
from central.auth import hash_password
from central.feed import Broadcaster
from storage.db import SessionFactory, make_engine, make_session_factory, upgrade
from storage.models import Alert, AlertNote, Contact, Device, DoseInstance, MedicationDose
from storage.records_models import AuditEntry
from storage.registry import add_client, add_device, add_user

pytestmark = pytest.mark.browser

playwright_api = pytest.importorskip(
    "playwright.sync_api", reason="BROWSER TESTS NOT RUN: playwright missing"
)
uvicorn = pytest.importorskip("uvicorn")

MIN = 60_000


class Site:
    """central's app under uvicorn in a thread (stopped at the end), on a seeded database."""

    def __init__(self, tmp_path: Path) -> None:
        url = f"sqlite:///{tmp_path / 'carealarm.sqlite3'}"
        upgrade(url)
        self.engine = make_engine(url)
        self.sessions: SessionFactory = make_session_factory(self.engine)
        self.ids = _seed(self.sessions)
        broadcaster = Broadcaster(self.sessions, poll_interval_s=0.5)
        ctx = CentralContext(sessions=self.sessions, broadcaster=broadcaster, notify_alerts=broadcaster.wake)
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        config = uvicorn.Config(create_app(ctx), host="127.0.0.1", port=port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="uvicorn", daemon=True)
        self.thread.start()
        wait_for(lambda: self.server.started, 20, what="uvicorn to start")

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=20)
        self.engine.dispose()


def _seed(sessions: SessionFactory) -> dict[str, int]:
    now = int(time.time() * 1000)
    with sessions.begin() as s:
        for username, role, district, name in (
            ("nurse", "care_nurse", "", "Anna de Vries"),
            ("wijk", "district_nurse", "Zwolle-Zuid", "Fatima El Amrani"),
        ):
            add_user(
                s,
                username=username,
                display_name=name,
                role=role,
                district=district,
                password_hash=hash_password(username),
                now_ms=now,
            )
        jansen = add_client(
            s,
            name="Mevr. J. Jansen",
            address="Assendorperstraat 12, Zwolle",
            district="Zwolle-Zuid",
            now_ms=now,
        )
        jansen.access_notes = "Key safe by the back door, code 4711"
        jansen.care_notes = "Hard of hearing; prefers a call before a visit."
        boer = add_client(
            s,
            name="Dhr. P. de Boer",
            address="Thorbeckegracht 40, Zwolle",
            district="Zwolle-Centrum",
            now_ms=now,
        )
        add_device(s, device_id="btn-001", client_id=jansen.id, kind="alarm_button", label="", now_ms=now)
        add_device(s, device_id="med-001", client_id=jansen.id, kind="dispenser", label="", now_ms=now)
        add_device(s, device_id="btn-002", client_id=boer.id, kind="alarm_button", now_ms=now)
        s.flush()
        for device_id, online, battery in (("btn-001", True, 87), ("med-001", False, 12)):
            device = s.get(Device, device_id)
            assert device is not None
            device.online, device.battery, device.last_seen_ms = online, battery, now - 5 * MIN
        s.add(MedicationDose(client_id=jansen.id, device_id="med-001", dose_id="morning", at="08:00"))
        s.add(MedicationDose(client_id=jansen.id, device_id="med-001", dose_id="evening", at="20:00"))
        s.add(
            Contact(
                client_id=jansen.id, name="Els Jansen", relation="informal_carer", phone="06 1234 5678",
                email="els@example.nl",
            )
        )  # fmt: skip
        s.add(
            Contact(client_id=jansen.id, name="Huisartsenpraktijk Kok", relation="gp", phone="038 421 0000")
        )
        alert = Alert(
            client_id=jansen.id, kind="alarm", priority=1, state="resolved", outcome="contact_attended",
            opened_ms=now - 90 * MIN, last_event_ms=now - 90 * MIN, acknowledged_ms=now - 90 * MIN + 38_000,
            resolved_ms=now - 80 * MIN, count=1, version=3,
        )  # fmt: skip
        s.add(alert)
        s.flush()
        s.add(AlertNote(alert_id=alert.id, at_ms=now - 85 * MIN, text="Fell in the kitchen, not hurt"))
        s.add(DoseInstance(client_id=jansen.id, dose_id="morning", due_ms=now - 60 * MIN, state="taken"))
        s.add(DoseInstance(client_id=jansen.id, dose_id="evening", due_ms=now - 30 * MIN, state="missed"))
        return {"jansen": jansen.id, "boer": boer.id}


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


def _page(browser: Any, site: Site, username: str, lang: str = "en") -> Any:
    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-GB")
    context.add_init_script(f"localStorage.setItem('lang', '{lang}')")
    response = context.request.post(
        site.url + "/api/session", data={"username": username, "password": username}
    )
    assert response.status == 200, response.text()
    return context.new_page()


def test_nurse_opens_a_client_gives_a_reason_and_sees_the_timeline(browser: Any, site: Site) -> None:
    """From the client list a nurse opens a record; the page asks for a reason, then shows the timeline."""
    page = _page(browser, site, "nurse")
    page.goto(site.url + "/static/client.html")
    page.fill("#search", "jansen")
    page.click("#search-form button[type=submit]")
    page.click("#client-list a:has-text('Jansen')")
    page.wait_for_selector("#reason:not([hidden])")
    page.screenshot(path=str(ARTIFACTS / "client-reason-prompt.png"))
    page.fill("#reason-text", "Daughter phoned, worried")
    page.click("#reason-form button[type=submit]")
    page.wait_for_selector("#timeline li")
    assert page.text_content("#c-access") == "Key safe by the back door, code 4711"
    assert page.get_attribute("#contacts a[href^='tel:']", "href") == "tel:0612345678"
    types = page.eval_on_selector_all("#timeline li", "els => els.map(e => e.dataset.type)")
    assert types == ["dose", "dose", "alert_note", "alert"]
    # The outcome in words (the codes care stations report on, #14), not its code.
    assert "contact attended" in page.inner_text("#timeline li[data-type=alert]")
    page.fill("#note-text", "Called back, all is well")
    page.click("#note-form button[type=submit]")
    page.wait_for_selector("#timeline li[data-type=client_note]")
    page.screenshot(path=str(ARTIFACTS / "client-record.png"), full_page=True)
    with site.sessions() as s:
        reasons = list(s.scalars(select(AuditEntry.reason).where(AuditEntry.action == "client.read")))
    assert reasons == ["Daughter phoned, worried"]
    assert "client.html?id=" in page.url and "Jansen" not in page.url
    page.context.close()


def test_district_nurse_cannot_open_a_client_outside_her_district(browser: Any, site: Site) -> None:
    """The district nurse's list holds only her district; another district's record is refused."""
    page = _page(browser, site, "wijk")
    page.goto(site.url + "/static/client.html")
    page.wait_for_selector("#client-list li")
    assert page.eval_on_selector_all("#client-list a", "els => els.map(e => e.textContent)") == [
        "Mevr. J. Jansen"
    ]
    page.goto(f"{site.url}/static/client.html?id={site.ids['boer']}")
    page.wait_for_selector("#message:not([hidden])")
    assert "outside your district" in (page.text_content("#message") or "")
    assert page.is_hidden("#record")
    page.screenshot(path=str(ARTIFACTS / "client-refused.png"))
    page.context.close()


def test_page_speaks_dutch(browser: Any, site: Site) -> None:
    """With lang=nl the page uses Dutch care vocabulary (tijdlijn, mantelzorger, medicatie)."""
    page = _page(browser, site, "nurse", lang="nl")
    page.goto(f"{site.url}/static/client.html?id={site.ids['jansen']}")
    page.fill("#reason-text", "Controle medicatieschema")
    page.click("#reason-form button[type=submit]")
    page.wait_for_selector("#timeline li")
    text = page.text_content("#record") or ""
    assert "Tijdlijn" in text and "mantelzorger" in text and "Medicatie" in text
    page.screenshot(path=str(ARTIFACTS / "client-record-nl.png"), full_page=True)
    page.context.close()
