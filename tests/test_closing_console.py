"""Closing an alarm in the console (#14 item 4), in Debian's headless Chromium against the real app: the
close form is an in-page dialog with no outcome chosen and a required note; the nurse closes, undoes, closes
again, sees the alarm in the handover; a race with another nurse is shown in the dialog, never alert().
Screenshots in test-artifacts/ (closing-*.png)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, wait_in_page
from sqlalchemy import select
from test_console_reraise import ZONE, Site

from care.alert_store import resolve_alert
from storage.models import AlertChange, User

pytestmark = pytest.mark.browser

playwright_api = pytest.importorskip(
    "playwright.sync_api", reason="BROWSER TESTS NOT RUN: playwright missing"
)


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


def _take(page: Any, client: str) -> Any:
    page.locator("#open-body tr", has_text=client).get_by_role("button", name="Acknowledge").click()
    row = page.locator("#progress-body tr", has_text=client)
    row.wait_for()
    return row


def test_close_with_outcome_and_note_undo_and_see_it_in_the_handover(browser: Any, site: Site) -> None:
    """No outcome is chosen when the form opens and closing without one or without a note is refused in the
    page; closed, it offers Undo, which puts it back in progress; closed again it is in the handover with
    its outcome, who and the note. Another nurse closing first is shown in the dialog."""
    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-GB", timezone_id=ZONE)
    context.add_init_script("localStorage.setItem('lang', 'en')")
    dialogs: list[str] = []
    try:
        page = context.new_page()

        def native_dialog(dialog: Any) -> None:
            dialogs.append(dialog.message)
            dialog.dismiss()

        page.on("dialog", native_dialog)
        site.press("btn-1", ago_s=30)
        page.goto(site.url + "/")
        page.fill("#username", "nurse")
        page.fill("#password", "nurse")
        page.click("#login-form button[type=submit]")
        page.wait_for_selector("#conn.conn-up")
        row = _take(page, "Mevr. Jansen")

        row.get_by_role("button", name="Close alarm…").click()
        page.wait_for_selector("#close-dialog[open]")
        assert (
            page.eval_on_selector_all("#close-outcome-list input", "els => els.map(e => e.checked)")
            == [False] * 7
        )
        page.click("#close-submit")
        assert page.inner_text("#close-error") == "Choose an outcome."
        page.get_by_label("Reassured — no help needed").check()
        page.click("#close-submit")
        assert "closing note" in page.inner_text("#close-error")
        page.fill("#close-note", "Pressed by accident while dressing; she is fine.")
        page.screenshot(path=str(ARTIFACTS / "closing-form.png"))
        page.click("#close-submit")
        page.wait_for_selector("#undo-bar:not([hidden])")
        assert "Mevr. Jansen — Reassured" in page.inner_text("#undo-bar")
        wait_in_page(page, "document.querySelectorAll('#progress-body tr').length === 0")
        page.screenshot(path=str(ARTIFACTS / "closing-undo.png"))

        page.click("#undo-btn")
        row = page.locator("#progress-body tr", has_text="Mevr. Jansen")
        row.wait_for()
        [alarm] = site.alarms()
        assert (alarm.state, alarm.outcome) == ("acknowledged", None)

        row.get_by_role("button", name="Close alarm…").click()
        page.get_by_label("Contact attended").check()
        page.fill("#close-note", "Daughter (keyholder) went round: unhurt, pendant caught on the chair.")
        page.click("#close-submit")
        page.wait_for_selector("#undo-bar:not([hidden])")

        page.click("#handover-box > summary")
        entry = page.locator("#handover-body tr", has_text="Mevr. Jansen")
        entry.wait_for()
        text = entry.inner_text()
        assert "Contact attended" in text and "Anna de Vries" in text, text
        assert "Daughter (keyholder) went round" in text and "Pressed by accident" in text, text
        page.screenshot(path=str(ARTIFACTS / "closing-handover.png"), full_page=True)

        # Another nurse closes an alarm while this one writes her note: the refusal is shown in the dialog.
        site.press("btn-2")
        row = _take(page, "Dhr. de Boer")
        row.get_by_role("button", name="Close alarm…").click()
        page.get_by_label("False alarm").check()
        page.fill("#close-note", "test press")
        [_, boer] = site.alarms()
        with site.sessions.begin() as s:
            nurse = s.scalars(select(User.id).where(User.username == "nurse")).one()
            resolve_alert(
                s,
                alert_id=boer.id,
                actor_id=nurse,
                now_ms=int(time.time() * 1000),
                outcome="reassured",
                note="x",
            )
        page.click("#close-submit")
        wait_in_page(page, "document.getElementById('close-error').textContent.includes('another nurse')")
        assert page.is_visible("#close-dialog")

        page.evaluate("window.carealarmI18n.setLang('nl')")
        page.click("#close-cancel")
        page.click("#handover-form button[type=submit]")
        wait_in_page(page, "document.getElementById('handover-body').textContent.includes('Contactpersoon')")
        page.screenshot(path=str(ARTIFACTS / "closing-handover-nl.png"), full_page=True)
        with site.sessions() as s:
            changes = list(s.scalars(select(AlertChange.change).where(AlertChange.alert_id == alarm.id)))
        assert changes[-3:] == ["resolved", "undone", "resolved"]
        assert dialogs == []  # no alert(), prompt() or confirm()
    finally:
        context.close()
