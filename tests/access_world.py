"""A care station of two districts for the access and audit tests (not a test module; import its fixture).

District nurse ``wijk`` works in Zuid (client Jansen); client De Boer lives in Centrum. Each client has an
open alert, a visit under way, a video device, an ended call and recorded consent, so every client-scoped
route has something to be about.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from central.app import CentralContext, create_app
from central.auth import COOKIE_NAME, create_session, hash_password
from central.feed import Broadcaster
from storage.calls_models import CallRecord, VideoConsent
from storage.db import SessionFactory
from storage.models import Alert, MedicationDose, Visit
from storage.records_models import AuditEntry
from storage.registry import add_client, add_device, add_user

NOW = 1_800_000_000_000
USERS = {
    "care": ("care_nurse", ""),
    "wijk": ("district_nurse", "Zuid"),
    "sup": ("supervisor", ""),
    "admin": ("admin", ""),
}
ROLE_USER = {role: name for name, (role, _district) in USERS.items()}


@functools.cache
def _password_hash() -> str:
    return hash_password("not-used-here")


@dataclass
class Site:
    """One client's things: the ids a client-scoped route may be about."""

    client_id: int
    alert_id: int
    visit_id: int
    call_id: str
    device_id: str


class World:
    """The API under test, its database and a clock the test moves."""

    def __init__(
        self,
        api: TestClient,
        sessions: SessionFactory,
        clock: list[int],
        ids: dict[str, int],
        sites: dict[str, Site],
    ) -> None:
        self.api, self.sessions, self.clock, self.ids, self.sites = api, sessions, clock, ids, sites

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

    def last_audit_id(self) -> int:
        rows = self.audit()
        return rows[-1].id if rows else 0


def _site(s: Session, recorder: int, client_id: int, device: str, call: str) -> Site:
    add_device(s, device_id=device, client_id=client_id, kind="video", now_ms=NOW)
    add_device(s, device_id=f"{device}-med", client_id=client_id, kind="dispenser", now_ms=NOW)
    s.add(MedicationDose(client_id=client_id, device_id=f"{device}-med", dose_id="morning", at="08:00"))
    alert = Alert(
        client_id=client_id, kind="alarm", priority=1, state="open", opened_ms=NOW, last_event_ms=NOW, count=1
    )
    s.add(alert)
    s.flush()
    visit = Visit(
        alert_id=alert.id, client_id=client_id, visitor="Anna", sent_ms=NOW, target_ms=NOW + 1_800_000
    )
    s.add(visit)
    s.add(
        CallRecord(
            id=call,
            client_id=client_id,
            device_id=device,
            direction="outbound",
            kind="video",
            state="ended",
            end_reason="hangup",
            started_ms=NOW - 60_000,
            ended_ms=NOW - 30_000,
        )
    )
    s.add(
        VideoConsent(
            client_id=client_id,
            monitoring_allowed=False,
            auto_answer=False,
            recorded_by=recorder,
            recorded_ms=NOW,
        )
    )
    s.flush()
    return Site(client_id, alert.id, visit.id, call, device)


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
        boer = add_client(s, name="Dhr. de Boer", address="Gracht 4", district="Centrum", now_ms=NOW)
        sites = {
            "own": _site(s, ids["admin"], jansen.id, "vid-own", "a" * 32),
            "other": _site(s, ids["admin"], boer.id, "vid-other", "b" * 32),
        }
    clock = [NOW]
    broadcaster = Broadcaster(sessions, poll_interval_s=0.1)
    ctx = CentralContext(
        sessions=sessions, broadcaster=broadcaster, notify_alerts=broadcaster.wake, clock_ms=lambda: clock[0]
    )
    with TestClient(create_app(ctx)) as api:
        yield World(api, sessions, clock, ids, sites)
