"""The client record API on SQLite and PostgreSQL: roles, districts, the reason prompt, audit, timeline."""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from care.alert_store import assign
from central.access import ACTIONS, may
from central.app import CentralContext, create_app
from central.auth import COOKIE_NAME, ROLES, create_session, hash_password
from central.feed import Broadcaster
from storage.calls_models import CallRecord
from storage.db import SessionFactory
from storage.models import (
    Alert,
    AlertNote,
    Client,
    Contact,
    DeviceEvent,
    DoseInstance,
    MedicationDose,
    User,
    Visit,
)
from storage.records_models import AuditEntry
from storage.records_models import ClientNote as ClientNoteRow
from storage.registry import add_client, add_device, add_user

NOW = 1_800_000_000_000
MIN = 60_000
USERS = {
    "care": ("care_nurse", ""),
    "care2": ("care_nurse", ""),
    "wijk": ("district_nurse", "Zuid"),
    "sup": ("supervisor", ""),
    "admin": ("admin", ""),
}


@functools.cache
def _password_hash() -> str:
    return hash_password("not-used-here")


class World:
    """The API under test, its database and a clock the test moves."""

    def __init__(self, api: TestClient, sessions: SessionFactory, clock: list[int], ids: dict[str, int]):
        self.api, self.sessions, self.clock, self.ids = api, sessions, clock, ids

    def as_(self, username: str) -> TestClient:
        """Act as ``username``: a real server-side session, its token in the cookie (no slow argon2)."""
        with self.sessions.begin() as s:
            token = create_session(s, self.ids[username], self.clock[0], 1.0)
        self.api.cookies.clear()
        self.api.cookies.set(COOKIE_NAME, token)
        return self.api

    def audit(self, action: str | None = None) -> list[AuditEntry]:
        with self.sessions() as s:
            query = select(AuditEntry).order_by(AuditEntry.id)
            if action:
                query = query.where(AuditEntry.action == action)
            return list(s.scalars(query))

    def alert(self, client: str, kind: str = "alarm", state: str = "open", at: int = NOW) -> int:
        with self.sessions.begin() as s:
            row = Alert(
                client_id=self.ids[client],
                kind=kind,
                priority=1,
                state=state,
                opened_ms=at,
                last_event_ms=at,
                count=1,
                version=1,
            )
            s.add(row)
            s.flush()
            return row.id


@pytest.fixture
def world(sessions: SessionFactory) -> Iterator[World]:
    ids: dict[str, int] = {}
    with sessions.begin() as s:
        for username, (role, district) in USERS.items():
            user = add_user(
                s,
                username=username,
                display_name=username.title(),
                role=role,
                district=district,
                password_hash=_password_hash(),
                now_ms=NOW,
            )
            ids[username] = user.id
        jansen = add_client(s, name="Mevr. Jansen", address="Dorpsstraat 1", district="Zuid", now_ms=NOW)
        jansen.access_notes, jansen.care_notes = "Key safe 4711, back door", "Hard of hearing"
        boer = add_client(s, name="Dhr. de Boer", address="Gracht 4", district="Centrum", now_ms=NOW)
        ids |= {"jansen": jansen.id, "boer": boer.id}
        add_device(
            s, device_id="btn-1", client_id=jansen.id, kind="alarm_button", label="Pendant", now_ms=NOW
        )
        add_device(s, device_id="med-1", client_id=jansen.id, kind="dispenser", now_ms=NOW)
        add_device(s, device_id="vid-1", client_id=jansen.id, kind="video", now_ms=NOW)
        s.add(MedicationDose(client_id=jansen.id, device_id="med-1", dose_id="morning", at="08:00"))
        s.add(Contact(client_id=jansen.id, name="Els", relation="informal_carer", phone="06 1234 5678"))
        s.add(Contact(client_id=jansen.id, name="Dr. Kok", relation="gp", email="kok@praktijk.nl"))
    clock = [NOW]
    broadcaster = Broadcaster(sessions, poll_interval_s=0.1)
    ctx = CentralContext(
        sessions=sessions, broadcaster=broadcaster, notify_alerts=broadcaster.wake, clock_ms=lambda: clock[0]
    )
    with TestClient(create_app(ctx)) as api:
        yield World(api, sessions, clock, ids)


def test_district_nurse_lists_only_her_district(world: World) -> None:
    """The list holds only the district nurse's own district; the care station sees every client."""
    names = [c["name"] for c in world.as_("wijk").get("/api/clients").json()["items"]]
    assert names == ["Mevr. Jansen"]
    assert len(world.as_("care").get("/api/clients").json()["items"]) == 2


def test_search_is_a_post_and_keeps_to_the_district(world: World) -> None:
    """A name search travels in a POST body and finds only clients the user may see."""
    found = world.as_("wijk").post("/api/clients/search", json={"q": "boer"}).json()["items"]
    assert found == []
    found = world.as_("care").post("/api/clients/search", json={"q": "boer"}).json()["items"]
    assert [c["id"] for c in found] == [world.ids["boer"]]


def test_district_nurse_is_refused_a_client_outside_her_district(world: World) -> None:
    """Another district's client is 403 with a clear body, and the attempt is audited."""
    response = world.as_("wijk").get(
        f"/api/clients/{world.ids['boer']}", params={"reason": "follow-up visit"}
    )
    assert response.status_code == 403
    assert response.json()["detail"] == f"client {world.ids['boer']} is outside your district"
    [row] = world.audit("client.read.refused")
    assert (row.user_id, row.client_id) == (world.ids["wijk"], world.ids["boer"])


def test_record_no_alert_concerns_needs_a_reason(world: World) -> None:
    """Without an alert of the user's, the record answers 428 saying a reason is needed."""
    response = world.as_("care").get(f"/api/clients/{world.ids['jansen']}")
    assert response.status_code == 428
    assert "a reason is needed" in response.json()["detail"]
    assert world.audit("client.read") == []


def test_the_reason_opens_the_record_and_is_logged(world: World) -> None:
    """With ?reason= the record opens and the audit row keeps the reason."""
    response = world.as_("care").get(
        f"/api/clients/{world.ids['jansen']}", params={"reason": "daughter phoned, worried"}
    )
    assert response.status_code == 200
    [row] = world.audit("client.read")
    assert (row.user_id, row.client_id, row.reason) == (
        world.ids["care"],
        world.ids["jansen"],
        "daughter phoned, worried",
    )


def test_the_reason_may_come_in_a_percent_encoded_header(world: World) -> None:
    """X-Access-Reason (percent-encoded UTF-8) keeps the reason out of the URL."""
    response = world.as_("care").get(
        f"/api/clients/{world.ids['jansen']}", headers={"X-Access-Reason": "cli%C3%ABnt%20belde%20terug"}
    )
    assert response.status_code == 200
    assert world.audit("client.read")[0].reason == "cliënt belde terug"


def test_a_too_short_reason_is_refused(world: World) -> None:
    """A reason under five characters is 422."""
    response = world.as_("care").get(f"/api/clients/{world.ids['jansen']}", params={"reason": "x"})
    assert response.status_code == 422


def test_an_open_alert_lets_the_care_station_in_without_a_reason(world: World) -> None:
    """An unanswered alert for the client concerns every care-station nurse, not a district nurse."""
    world.alert("jansen")
    assert world.as_("care").get(f"/api/clients/{world.ids['jansen']}").status_code == 200
    assert world.as_("wijk").get(f"/api/clients/{world.ids['jansen']}").status_code == 428


def test_an_acknowledged_alert_concerns_only_who_took_it(world: World) -> None:
    """Once a nurse acknowledges it, she opens the record freely; a colleague needs a reason."""
    alert_id = world.alert("jansen")
    assert world.as_("care").post(f"/api/alerts/{alert_id}/acknowledge").status_code == 200
    assert world.api.get(f"/api/clients/{world.ids['jansen']}").status_code == 200
    assert world.as_("care2").get(f"/api/clients/{world.ids['jansen']}").status_code == 428


def test_an_assigned_alert_lets_the_district_nurse_in(world: World) -> None:
    """An alert assigned to the district nurse concerns her: no reason needed."""
    alert_id = world.alert("jansen")
    with world.sessions.begin() as s:
        assign(s, alert_id=alert_id, user_id=world.ids["wijk"], actor_id=world.ids["care"], now_ms=NOW)
    assert world.as_("wijk").get(f"/api/clients/{world.ids['jansen']}").status_code == 200


def test_record_shows_who_where_devices_schedule_contacts_and_alerts(world: World) -> None:
    """The record carries access instructions, live device status, the schedule, call/mail links, alerts."""
    world.alert("jansen")
    record = world.as_("care").get(f"/api/clients/{world.ids['jansen']}").json()
    assert (record["address"], record["district"]) == ("Dorpsstraat 1", "Zuid")
    assert record["access_notes"] == "Key safe 4711, back door"
    assert [d["id"] for d in record["devices"]] == ["btn-1", "med-1", "vid-1"]
    assert record["devices"][0]["status"] == "unknown"
    assert record["schedule"] == [{"dose_id": "morning", "at": "08:00", "label": "", "device_id": "med-1"}]
    links = {c["name"]: (c["tel"], c["mailto"]) for c in record["contacts"]}
    assert links == {"Els": ("tel:0612345678", None), "Dr. Kok": (None, "mailto:kok@praktijk.nl")}
    assert [a["kind"] for a in record["open_alerts"]] == ["alarm"]


def test_unknown_client_is_404_and_anonymous_is_401(world: World) -> None:
    """An unknown id is 404; without a session every endpoint is 401."""
    assert world.as_("care").get("/api/clients/999999", params={"reason": "checking"}).status_code == 404
    world.api.cookies.clear()
    assert world.api.get("/api/clients").status_code == 401
    assert world.api.get("/api/audit").status_code == 401


def test_every_read_and_action_is_audited(world: World) -> None:
    """List, search, record, timeline and a note each write one audit row with user and client."""
    api, cid = world.as_("care"), world.ids["jansen"]
    api.get("/api/clients")
    api.post("/api/clients/search", json={"q": "jan"})
    why = {"reason": "weekly review"}
    api.get(f"/api/clients/{cid}", params=why)
    api.get(f"/api/clients/{cid}/timeline", params=why)
    assert (
        api.post(f"/api/clients/{cid}/notes", params=why, json={"text": "Called, all well"}).status_code
        == 201
    )
    rows = world.audit()
    assert [r.action for r in rows] == [
        "client.list",
        "client.search",
        "client.read",
        "client.timeline",
        "client.note",
    ]
    assert {r.user_id for r in rows} == {world.ids["care"]}
    assert [r.client_id for r in rows[2:]] == [cid] * 3


def test_audit_log_is_for_supervisors_and_admins(world: World) -> None:
    """Care and district nurses get 403 naming their role; supervisors and admins read the log."""
    for username, role in (("care", "care_nurse"), ("wijk", "district_nurse")):
        response = world.as_(username).get("/api/audit")
        assert response.status_code == 403
        assert response.json()["detail"] == f"the role {role} may not read the audit log"
    for username in ("sup", "admin"):
        assert world.as_(username).get("/api/audit").status_code == 200


def test_audit_log_filters_and_pages(world: World) -> None:
    """The log filters by user, client, action (or prefix) and time, and pages newest first."""
    why = {"reason": "weekly review"}
    world.as_("care").get(f"/api/clients/{world.ids['jansen']}", params=why)
    world.clock[0] = NOW + MIN
    world.as_("care2").get(f"/api/clients/{world.ids['jansen']}/timeline", params=why)
    world.as_("sup").get(f"/api/clients/{world.ids['boer']}", params=why)
    api = world.api

    def actions(**params: Any) -> list[str]:
        return [e["action"] for e in api.get("/api/audit", params=params).json()["items"]]

    assert actions(user_id=world.ids["care2"]) == ["client.timeline"]
    assert actions(client_id=world.ids["boer"]) == ["client.read"]
    assert actions(action="client.read") == ["client.read", "client.read"]
    assert actions(action="client.", until=NOW + MIN) == ["client.read"]
    assert actions(action="client.", since=NOW + MIN) == ["client.read", "client.timeline"]
    first = api.get("/api/audit", params={"action": "client.", "limit": 2}).json()
    rest = api.get("/api/audit", params={"action": "client.", "before_id": first["next_before_id"]}).json()
    assert len(first["items"]) == 2 and [e["action"] for e in rest["items"]] == ["client.read"]
    assert rest["next_before_id"] is None


def test_admin_may_not_write_care_notes(world: World) -> None:
    """A care note is for care staff: the admin gets 403 with a clear body."""
    response = world.as_("admin").post(
        f"/api/clients/{world.ids['jansen']}/notes", params={"reason": "testing"}, json={"text": "hello"}
    )
    assert response.status_code == 403
    assert response.json()["detail"] == "the role admin may not add a care note"


def test_policy_table_refuses_each_role_something() -> None:
    """Every role is refused at least one action; care nurses the audit log, supervisors user management."""
    for role in ROLES:
        assert any(not may(role, action) for action in ACTIONS), role
    assert not may("care_nurse", "audit.read")
    assert not may("district_nurse", "alert.acknowledge")
    assert not may("supervisor", "user.manage")
    assert not may("admin", "client.note")
    assert not may("nobody", "client.list") and not may("admin", "no.such.action")


def _seed_every_channel(world: World) -> list[tuple[str, int]]:
    """One entry of each kind, a minute apart; returns (type, at_ms) newest first."""
    cid = world.ids["jansen"]
    with world.sessions.begin() as s:
        alert = Alert(
            client_id=cid,
            kind="alarm",
            priority=1,
            state="resolved",
            outcome="talked_to_client",
            opened_ms=NOW + 1 * MIN,
            last_event_ms=NOW + 1 * MIN,
            acknowledged_ms=NOW + 1 * MIN + 42_000,
            acknowledged_by=world.ids["care"],
            resolved_ms=NOW + 3 * MIN,
            count=1,
            version=3,
        )
        s.add(alert)
        s.flush()
        s.add(AlertNote(alert_id=alert.id, user_id=world.ids["care"], at_ms=NOW + 2 * MIN, text="All well"))
        s.add(
            CallRecord(
                id="c0ffee",
                client_id=cid,
                device_id="vid-1",
                direction="outbound",
                kind="video",
                state="ended",
                end_reason="hangup",
                started_ms=NOW + 3 * MIN,
                answered_ms=NOW + 3 * MIN + 5000,
                connected_ms=NOW + 3 * MIN + 6000,
                ended_ms=NOW + 5 * MIN,
                restarts=0,
            )
        )
        s.add(DoseInstance(client_id=cid, dose_id="morning", due_ms=NOW + 4 * MIN, state="taken"))
        s.add(DoseInstance(client_id=cid, dose_id="noon", due_ms=NOW + 5 * MIN, state="missed"))
        s.add(DoseInstance(client_id=cid, dose_id="evening", due_ms=NOW + 20 * MIN, state="pending"))
        for msg, dose, at in (("m1", "extra", NOW + 6 * MIN), ("m2", "morning", NOW + 4 * MIN + 1)):
            body = {"msg_id": msg, "ts": at, "event": "taken", "dose_id": dose}
            s.add(
                DeviceEvent(
                    device_id="med-1",
                    msg_id=msg,
                    kind="dose",
                    device_ts_ms=at,
                    received_ms=at,
                    payload=json.dumps(body),
                    handled_ms=at,
                )
            )
        s.add(
            Visit(
                alert_id=alert.id,
                client_id=cid,
                visitor="Wijk",
                sent_ms=NOW + 7 * MIN,
                target_ms=NOW + 37 * MIN,
                state="underway",
            )
        )
    world.as_("care").post(
        f"/api/clients/{cid}/notes", params={"reason": "weekly review"}, json={"text": "Ok"}
    )
    return [
        ("client_note", NOW),
        ("visit", NOW + 7 * MIN),
        ("dose_report", NOW + 6 * MIN),
        ("dose", NOW + 5 * MIN),
        ("dose", NOW + 4 * MIN),
        ("call", NOW + 3 * MIN),
        ("alert_note", NOW + 2 * MIN),
        ("alert", NOW + 1 * MIN),
    ]


def test_timeline_merges_every_channel_newest_first(world: World) -> None:
    """Alerts, alert notes, calls, doses, unmatched dose reports, visits and care notes, newest first."""
    world.clock[0] = NOW + 10 * MIN
    expected = _seed_every_channel(world)
    expected[0] = ("client_note", NOW + 10 * MIN)
    items = world.api.get(
        f"/api/clients/{world.ids['jansen']}/timeline", params={"reason": "weekly review"}
    ).json()["items"]
    assert [(e["type"], e["at_ms"]) for e in items] == expected
    alarm = items[-1]
    assert (alarm["alarm"], alarm["outcome"], alarm["answer_ms"], alarm["acknowledged_by"]) == (
        True,
        "talked_to_client",
        42_000,
        "Care",
    )
    assert [e["state"] for e in items if e["type"].startswith("dose")] == ["taken", "missed", "taken"]


def test_timeline_pages_lose_and_repeat_nothing_at_equal_times(world: World) -> None:
    """Entries sharing one time across page boundaries each appear exactly once."""
    cid = world.ids["jansen"]
    with world.sessions.begin() as s:
        for i in range(5):
            s.add(ClientNoteRow(client_id=cid, user_id=world.ids["care"], at_ms=NOW, text=f"n{i}"))
            s.add(Visit(client_id=cid, visitor=f"v{i}", sent_ms=NOW, target_ms=NOW, state="arrived"))
    api, seen, before = world.as_("care"), [], None
    for _ in range(10):
        params: dict[str, Any] = {"reason": "weekly review", "limit": 3}
        if before:
            params["before"] = before
        page = api.get(f"/api/clients/{cid}/timeline", params=params).json()
        seen += [(e["type"], e["id"]) for e in page["items"]]
        before = page["next_before"]
        if before is None:
            break
    assert len(seen) == len(set(seen)) == 10


def test_timeline_refuses_a_cursor_it_did_not_make(world: World) -> None:
    """A malformed ``before`` is 422 with a reason."""
    response = world.as_("care").get(
        f"/api/clients/{world.ids['jansen']}/timeline", params={"reason": "weekly review", "before": "x;y"}
    )
    assert response.status_code == 422 and "before" in response.json()["detail"]


def test_timeline_before_a_time_shows_only_older_entries(world: World) -> None:
    """A bare time as ``before`` starts the page strictly before it."""
    _seed_every_channel(world)
    items = world.api.get(
        f"/api/clients/{world.ids['jansen']}/timeline",
        params={"reason": "weekly review", "before": str(NOW + 3 * MIN)},
    ).json()["items"]
    assert [e["type"] for e in items] == ["alert_note", "alert", "client_note"]


def test_client_columns_exist_after_migration(world: World) -> None:
    """The migration adds access and care notes to clients."""
    with world.sessions() as s:
        client = s.get(Client, world.ids["jansen"])
        assert client is not None and client.care_notes == "Hard of hearing"
        assert s.get(User, world.ids["care"]) is not None
