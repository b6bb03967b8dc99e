"""Closing an alarm properly (#14 item 4): an outcome chosen from the care stations' codes and a closing
note, both required; conflicts are 409; the nurse who resolved may undo for UNDO_WINDOW_MS; the handover
lists the shift's alerts with times, people, outcome and notes. SQLite and PostgreSQL."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from care.alerts import LEGACY_OUTCOMES, OUTCOMES, UNDO_WINDOW_MS, may_undo
from central.app import CentralContext, create_app
from central.auth import hash_password
from central.feed import Broadcaster
from gateway.ingest import Inbound, plan_batch
from gateway.store import store_plan
from monitor.events import handle_pending_events
from storage.db import SessionFactory
from storage.models import AlertChange
from storage.records_models import AuditEntry
from storage.registry import add_client, add_device, add_user

NOW = 1_800_000_000_000
STATIC = Path(__file__).resolve().parents[1] / "central" / "static"


@pytest.fixture
def clock() -> list[int]:
    return [NOW]


@pytest.fixture
def api(sessions: SessionFactory, clock: list[int]) -> Iterator[TestClient]:
    with sessions.begin() as s:
        client = add_client(s, name="Mevr. Jansen", address="Dorpsstraat 1", now_ms=NOW)
        add_device(
            s, device_id="btn-1", client_id=client.id, kind="alarm_button", label="Pendant", now_ms=NOW
        )
        for username, role in (("nurse", "care_nurse"), ("nurse2", "care_nurse"), ("sup", "supervisor")):
            add_user(
                s,
                username=username,
                display_name=username.title(),
                role=role,
                password_hash=hash_password(f"{username}-pw"),
                now_ms=NOW,
            )
    broadcaster = Broadcaster(sessions, poll_interval_s=0.1)
    ctx = CentralContext(
        sessions=sessions, broadcaster=broadcaster, notify_alerts=broadcaster.wake, clock_ms=lambda: clock[0]
    )
    with TestClient(create_app(ctx)) as test_client:
        yield test_client


def _as(api: TestClient, username: str) -> TestClient:
    other = TestClient(api.app)
    answer = other.post("/api/session", json={"username": username, "password": f"{username}-pw"})
    assert answer.status_code == 200, answer.text
    return other


def _taken_alarm(api: TestClient, sessions: SessionFactory, nurse: TestClient, msg_id: str = "a1") -> int:
    inbound = Inbound(
        "carealarm/v1/devices/btn-1/alarm", f'{{"msg_id":"{msg_id}","ts":{NOW}}}'.encode(), 1, 1, NOW
    )
    with sessions.begin() as s:
        store_plan(s, plan_batch([inbound], lambda _d: True, NOW), [])
    with sessions.begin() as s:
        handle_pending_events(s, NOW)
    [alert] = [a for a in nurse.get("/api/alerts").json() if a["state"] == "open"]
    assert nurse.post(f"/api/alerts/{alert['id']}/acknowledge").status_code == 200
    return int(alert["id"])


def test_the_outcomes_are_the_codes_care_stations_report_on() -> None:
    """Seven codes, in the console's order; the old codes stay readable but are no longer offered."""
    assert OUTCOMES == (
        "false_alarm",
        "reassured",
        "contact_attended",
        "district_nurse_attended",
        "ambulance",
        "fire_service",
        "no_response_visit",
    )
    assert "talked_to_client" in LEGACY_OUTCOMES and not LEGACY_OUTCOMES & set(OUTCOMES)


def test_resolve_needs_a_known_outcome_and_a_closing_note(api: TestClient, sessions: SessionFactory) -> None:
    """Reproduced: an outcome alone closed the alarm. Now no note, an empty note or an old code is 422;
    with both it closes, and the note is on the alert."""
    nurse = _as(api, "nurse")
    alert_id = _taken_alarm(api, sessions, nurse)
    url = f"/api/alerts/{alert_id}/resolve"
    assert nurse.post(url, json={"outcome": "reassured"}).status_code == 422
    assert nurse.post(url, json={"outcome": "reassured", "note": "   "}).status_code == 422
    old = nurse.post(url, json={"outcome": "talked_to_client", "note": "fine"})
    assert old.status_code == 422 and "outcome must be one of" in old.json()["detail"]
    done = nurse.post(url, json={"outcome": "reassured", "note": "Pressed by accident; she is fine."})
    assert done.status_code == 200, done.text
    assert (done.json()["state"], done.json()["outcome"]) == ("resolved", "reassured")
    [entry] = nurse.get("/api/handover").json()["alerts"]
    assert [n["text"] for n in entry["notes"]] == ["Pressed by accident; she is fine."]
    assert entry["notes"][0]["by"] == "Nurse"


def test_a_second_nurse_resolving_the_same_alarm_gets_409(api: TestClient, sessions: SessionFactory) -> None:
    """Two nurses race: the first close wins, the second is told who was first in a 409, not a 500."""
    nurse, other = _as(api, "nurse"), _as(api, "nurse2")
    alert_id = _taken_alarm(api, sessions, nurse)
    body = {"outcome": "false_alarm", "note": "test press"}
    assert nurse.post(f"/api/alerts/{alert_id}/resolve", json=body).status_code == 200
    late = other.post(f"/api/alerts/{alert_id}/resolve", json=body)
    assert late.status_code == 409 and "resolved" in late.json()["detail"]


def test_undo_puts_the_alarm_back_in_progress_for_the_same_nurse_only(
    api: TestClient, sessions: SessionFactory, clock: list[int]
) -> None:
    """Within the undo window the nurse who resolved takes it back (in progress again, outcome cleared,
    recorded as a change and in the audit log); another nurse, or anyone after the window, gets 409."""
    nurse, other = _as(api, "nurse"), _as(api, "nurse2")
    alert_id = _taken_alarm(api, sessions, nurse)
    body = {"outcome": "ambulance", "note": "112 called"}
    assert nurse.post(f"/api/alerts/{alert_id}/resolve", json=body).status_code == 200
    clock[0] += UNDO_WINDOW_MS - 1
    refused = other.post(f"/api/alerts/{alert_id}/undo")
    assert refused.status_code == 409 and "only the nurse who resolved it" in refused.json()["detail"]
    back = nurse.post(f"/api/alerts/{alert_id}/undo")
    assert back.status_code == 200, back.text
    assert (back.json()["state"], back.json()["outcome"], back.json()["acknowledged_by"]) == (
        "acknowledged",
        None,
        "Nurse",
    )
    assert [a["id"] for a in nurse.get("/api/alerts").json()] == [alert_id]
    with sessions() as s:
        changes = list(s.scalars(select(AlertChange.change).where(AlertChange.alert_id == alert_id)))
        audited = list(s.scalars(select(AuditEntry.action).where(AuditEntry.alert_id == alert_id)))
    assert changes[-2:] == ["resolved", "undone"]
    assert audited[-2:] == ["alert.resolve", "alert.undo"]
    assert nurse.post(f"/api/alerts/{alert_id}/undo").status_code == 409  # not resolved now
    assert nurse.post(f"/api/alerts/{alert_id}/resolve", json=body).status_code == 200
    clock[0] += UNDO_WINDOW_MS + 1
    late = nurse.post(f"/api/alerts/{alert_id}/undo")
    assert late.status_code == 409 and "add a note instead" in late.json()["detail"]


def test_handover_lists_the_shifts_alerts_with_times_people_outcome_and_notes(
    api: TestClient, sessions: SessionFactory, clock: list[int]
) -> None:
    """The shift's alarms, newest first: resolved ones with who answered and closed, how and why, and the
    running ones; an alarm closed before the shift began is not in it. Audited."""
    nurse = _as(api, "nurse")
    first = _taken_alarm(api, sessions, nurse, "a1")
    nurse.post(f"/api/alerts/{first}/resolve", json={"outcome": "false_alarm", "note": "old one"})
    clock[0] += 13 * 3_600_000
    nurse = _as(api, "nurse")  # a new shift, a new sign-in
    second = _taken_alarm(api, sessions, nurse, "a2")
    assert nurse.post(f"/api/alerts/{second}/notes", json={"text": "daughter on her way"}).status_code == 201
    clock[0] += 60_000
    done = {"outcome": "contact_attended", "note": "Daughter found her on the floor, unhurt."}
    assert nurse.post(f"/api/alerts/{second}/resolve", json=done).status_code == 200
    answer = nurse.get("/api/handover")
    assert answer.status_code == 200, answer.text
    page = answer.json()
    assert page["outcomes"] == list(OUTCOMES) and page["undo_window_ms"] == UNDO_WINDOW_MS
    [entry] = page["alerts"]
    assert entry["id"] == second
    assert (entry["client"]["name"], entry["kind"], entry["outcome"]) == (
        "Mevr. Jansen",
        "alarm",
        "contact_attended",
    )
    assert (entry["acknowledged_by"], entry["resolved_by"]) == ("Nurse", "Nurse")
    assert entry["resolved_ms"] == clock[0] and entry["opened_ms"] == NOW
    assert [n["text"] for n in entry["notes"]] == ["daughter on her way", done["note"]]
    everything = nurse.get("/api/handover", params={"since_ms": NOW - 1}).json()["alerts"]
    assert [a["id"] for a in everything] == [second, first]
    with sessions() as s:
        assert s.scalars(select(AuditEntry.action).where(AuditEntry.action == "alert.handover")).first()


def test_the_report_counts_the_outcomes_chosen(api: TestClient, sessions: SessionFactory) -> None:
    """The answer-times report says how the alarms were closed: per day, per outcome code."""
    nurse = _as(api, "nurse")
    alert_id = _taken_alarm(api, sessions, nurse)
    body = {"outcome": "district_nurse_attended", "note": "Wijkverpleging checked her; all well."}
    assert nurse.post(f"/api/alerts/{alert_id}/resolve", json=body).status_code == 200
    report = _as(api, "sup").get(
        "/api/reports/answer-times", params={"tz": "UTC", "since": "2027-01-15", "until": "2027-01-15"}
    )
    assert report.status_code == 200, report.text
    assert report.json()["outcomes"] == [
        {"day": "2027-01-15", "outcome": "district_nurse_attended", "alarms": 1}
    ]


def test_the_console_offers_the_undo_for_as_long_as_the_server_allows_it() -> None:
    """closing.js's undo time is care.alerts.UNDO_WINDOW_MS (the server refuses after it anyway)."""
    match = re.search(r"const UNDO_MS = (\d+);", (STATIC / "closing.js").read_text())
    assert match and int(match.group(1)) == UNDO_WINDOW_MS


def test_who_may_undo_and_until_when() -> None:
    """Only the nurse who resolved it, only within the window; a close by the monitor cannot be undone."""
    assert may_undo(NOW, 7, 7, NOW + UNDO_WINDOW_MS) is None
    assert "over" in (may_undo(NOW, 7, 7, NOW + UNDO_WINDOW_MS + 1) or "")
    assert "only the nurse" in (may_undo(NOW, 7, 8, NOW + 1) or "")
    assert "not resolved by a person" in (may_undo(NOW, None, 7, NOW + 1) or "")
