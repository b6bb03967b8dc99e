"""Unusual access (central.insider), on SQLite and PostgreSQL: a nurse who opens more client records with a
reason than the threshold within an hour is flagged once on the audit log (``access.unusual``) and paged to
the supervisor on duty; records an alert of hers concerns do not count; an hour later it can page again."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from care.channels import FakeChannel
from central.app import CentralContext, create_app
from central.auth import COOKIE_NAME, create_session
from central.feed import Broadcaster
from central.insider import UNUSUAL, WINDOW_MS, InsiderWatch, unusual
from storage.db import SessionFactory
from storage.models import Alert, User
from storage.records_models import AuditEntry
from storage.registry import add_client, add_user

NOW = 1_800_000_000_000


class Station:
    def __init__(
        self, api: TestClient, sessions: SessionFactory, clock: list[int], ids: dict[str, int]
    ) -> None:
        self.api, self.sessions, self.clock, self.ids = api, sessions, clock, ids
        self.email = FakeChannel("email")
        self.watch = InsiderWatch(sessions, {"email": self.email}, threshold=2, clock_ms=lambda: clock[0])

    def open_records(self, *names: str, reason: str | None = "checking the care plan") -> None:
        with self.sessions.begin() as s:
            token = create_session(s, self.ids["care"], self.clock[0], 1.0)
        self.api.cookies.set(COOKIE_NAME, token)
        for name in names:
            query = f"?reason={reason}" if reason else ""
            response = self.api.get(f"/api/clients/{self.ids[name]}{query}")
            assert response.status_code == 200, response.text

    def flags(self) -> list[AuditEntry]:
        with self.sessions() as s:
            return list(s.scalars(select(AuditEntry).where(AuditEntry.action == UNUSUAL)))


@pytest.fixture
def station(sessions: SessionFactory) -> Iterator[Station]:
    ids: dict[str, int] = {}
    with sessions.begin() as s:
        for username, role in (("care", "care_nurse"), ("sup", "supervisor")):
            ids[username] = add_user(
                s, username=username, display_name=username.title(), role=role, password_hash="x", now_ms=NOW
            ).id
        s.get(User, ids["sup"]).email = "sup@care.example"  # type: ignore[union-attr]
        for name in ("a", "b", "c", "d"):
            ids[name] = add_client(s, name=f"Client {name}", district="Zuid", now_ms=NOW).id
    clock = [NOW]
    broadcaster = Broadcaster(sessions, poll_interval_s=0.1)
    ctx = CentralContext(sessions, broadcaster, broadcaster.wake, clock_ms=lambda: clock[0])
    with TestClient(create_app(ctx)) as api:
        yield Station(api, sessions, clock, ids)


def test_many_records_opened_with_a_reason_are_flagged_and_paged_once(station: Station) -> None:
    station.open_records("a", "b")
    assert station.watch.check() == [] and station.flags() == []  # two is not more than the threshold
    station.open_records("c", "a")  # a third client (a twice counts once)
    assert station.watch.check() == [station.ids["care"]]
    (flag,) = station.flags()
    assert flag.user_id == station.ids["care"] and flag.detail.startswith("3 client records")
    (page,) = station.email.sent
    assert page.recipient == "sup@care.example" and "Care (care)" in page.subject
    station.open_records("d")
    station.clock[0] += 60_000
    assert station.watch.check() == [] and len(station.email.sent) == 1  # once per hour
    station.clock[0] = NOW + WINDOW_MS + 120_000
    station.open_records("a", "b", "c")
    assert station.watch.check() == [station.ids["care"]] and len(station.email.sent) == 2


def test_records_her_alerts_concern_do_not_count(station: Station) -> None:
    with station.sessions.begin() as s:
        for name in ("a", "b", "c"):
            s.add(
                Alert(
                    client_id=station.ids[name], kind="alarm", priority=1, state="open", opened_ms=NOW,
                    last_event_ms=NOW, count=1, version=1,
                )
            )  # fmt: skip
    station.open_records("a", "b", "c", reason=None)  # no reason needed: unanswered alarms concern her
    assert station.watch.check() == [] and station.email.sent == []


def test_the_rule_counts_distinct_clients_and_zero_turns_it_off() -> None:
    looks = [(1, 10), (1, 10), (1, 11), (2, 10)]
    assert unusual(looks, 1) == {1: 2}
    assert unusual(looks, 0) == {}
