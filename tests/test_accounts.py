"""Accounts on a real database: sign-in limits per name and per address with a back-off that never locks the
owner out for long, the password policy (API and CLI), deactivating users and resetting passwords."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from central.app import CentralContext, create_app
from central.auth import FailureLimiter, hash_password
from central.feed import Broadcaster
from storage.db import SessionFactory, make_engine, make_session_factory, upgrade
from storage.registry import add_user

NOW = 1_800_000_000_000
ADMIN_PW = "admin-Tulip-Harbour-71"
NURSE_PW = "nurse-Copper-Lantern-42"


@dataclass
class World:
    app: FastAPI
    clock: list[float]

    def client(self, address: str) -> TestClient:
        """A browser at ``address`` (its own cookies)."""
        return TestClient(self.app, client=(address, 50000))

    def sign_in(self, client: TestClient, username: str, password: str) -> int:
        response = client.post("/api/session", json={"username": username, "password": password})
        return response.status_code


@pytest.fixture
def sqlite_world(tmp_path: Path) -> Iterator[World]:
    """The world on SQLite only: for what does not depend on the database kind."""
    url = f"sqlite:///{tmp_path / 'carealarm.sqlite3'}"
    upgrade(url)
    engine = make_engine(url)
    try:
        yield from _world(make_session_factory(engine))
    finally:
        engine.dispose()


@pytest.fixture
def world(sessions: SessionFactory) -> Iterator[World]:
    """The world on each database kind (the migration's column is used)."""
    yield from _world(sessions)


def _world(sessions: SessionFactory) -> Iterator[World]:
    with sessions.begin() as s:
        for username, role, password in (
            ("admin", "admin", ADMIN_PW),
            ("nurse", "care_nurse", NURSE_PW),
            ("sup", "supervisor", "sup-Velvet-Orchard-93"),
        ):
            add_user(
                s,
                username=username,
                display_name=username.title(),
                role=role,
                password_hash=hash_password(password),
                now_ms=NOW,
            )
    clock = [1000.0]
    broadcaster = Broadcaster(sessions, poll_interval_s=0.1)
    ctx = CentralContext(
        sessions=sessions,
        broadcaster=broadcaster,
        notify_alerts=broadcaster.wake,
        limiter=FailureLimiter(clock=lambda: clock[0]),
        clock_ms=lambda: NOW,
    )
    app = create_app(ctx)
    with TestClient(app):
        yield World(app, clock)


def test_an_attacker_elsewhere_never_locks_the_owner_out(sqlite_world: World) -> None:
    """Thirty wrong passwords for a nurse from elsewhere do not stop her at the workstation she uses."""
    station, attacker = sqlite_world.client("10.0.0.1"), sqlite_world.client("203.0.113.9")
    assert sqlite_world.sign_in(station, "nurse", NURSE_PW) == 200
    for _ in range(30):
        assert sqlite_world.sign_in(attacker, "nurse", "guess-guess-guess") in (401, 429)
    assert sqlite_world.sign_in(station, "nurse", NURSE_PW) == 200


def test_a_new_place_waits_a_growing_delay_of_at_most_five_minutes(sqlite_world: World) -> None:
    """From a place she never signed in from, the owner waits out a back-off capped at 5 minutes."""
    attacker, laptop = sqlite_world.client("203.0.113.9"), sqlite_world.client("10.0.0.2")
    waits = []
    for _ in range(30):
        response = attacker.post("/api/session", json={"username": "nurse", "password": "guess-guess"})
        if response.status_code == 429:
            waits.append(int(response.headers["Retry-After"]))
            sqlite_world.clock[0] += waits[-1]
    assert waits and waits == sorted(waits) and max(waits) <= 300, waits
    assert sqlite_world.sign_in(attacker, "nurse", "guess-again") == 401  # the wait is over: one more failure
    refused = laptop.post("/api/session", json={"username": "nurse", "password": NURSE_PW})
    assert refused.status_code == 429 and 0 < int(refused.headers["Retry-After"]) <= 300
    sqlite_world.clock[0] += 300
    assert sqlite_world.sign_in(laptop, "nurse", NURSE_PW) == 200


def test_spraying_one_password_over_many_names_from_one_address_is_limited(sqlite_world: World) -> None:
    """One address trying one password over 40 names is slowed down (429) before it gets far."""
    sprayer = sqlite_world.client("198.51.100.7")
    codes = [sqlite_world.sign_in(sprayer, f"user{i}", "Summer2024!") for i in range(40)]
    assert 429 in codes and codes.index(429) <= 25, codes


def test_sign_in_limits_hold_bounded_memory() -> None:
    """A flood of names and addresses keeps at most a bounded number of keys."""
    limiter = FailureLimiter(max_entries=100, clock=lambda: 0.0)
    for i in range(5000):
        limiter.fail(f"name{i}", f"10.{i // 256 % 256}.{i % 256}.1")
    assert limiter.size() <= 400


WEAK = [
    ("aaaaaaaaaa", "repeat"),
    ("password12", "common"),
    ("qwertyuiop", "common"),
    ("1234567890", "common"),
    ("wijk7-Secret-Garden", "user name"),
    ("short", "at least 10 characters"),
]


def test_weak_passwords_are_refused_by_the_api(sqlite_world: World) -> None:
    """Common and breached passwords, patterns and the user name are refused with the reason."""
    admin = sqlite_world.client("10.0.0.1")
    assert sqlite_world.sign_in(admin, "admin", ADMIN_PW) == 200
    for password, why in WEAK:
        body = {"username": "wijk7", "display_name": "W", "role": "care_nurse", "password": password}
        response = admin.post("/api/manage/users", json=body)
        assert response.status_code == 422 and why in response.text, (password, response.text)


def test_a_deactivated_user_cannot_sign_in_and_every_session_ends(world: World) -> None:
    """Deactivating ends the user's sessions at once and refuses her sign-in; re-activating lets her in."""
    admin, ward, home = world.client("10.0.0.1"), world.client("10.0.0.2"), world.client("10.0.0.3")
    assert world.sign_in(admin, "admin", ADMIN_PW) == 200
    assert world.sign_in(ward, "nurse", NURSE_PW) == 200 and world.sign_in(home, "nurse", NURSE_PW) == 200
    nurse = next(u for u in admin.get("/api/manage/users").json() if u["username"] == "nurse")
    assert nurse["active"] is True
    done = admin.post(f"/api/manage/users/{nurse['id']}/deactivate")
    assert done.status_code == 200 and done.json()["active"] is False
    assert ward.get("/api/me").status_code == 401 and home.get("/api/me").status_code == 401
    assert world.sign_in(world.client("10.0.0.4"), "nurse", NURSE_PW) == 401
    assert admin.post(f"/api/manage/users/{nurse['id']}/activate").json()["active"] is True
    assert world.sign_in(world.client("10.0.0.5"), "nurse", NURSE_PW) == 200


def test_a_password_reset_ends_sessions_and_follows_the_policy(world: World) -> None:
    """An admin resets a password (weak ones refused); the old sessions and the old password stop working;
    a supervisor may not reset passwords."""
    admin, ward, sup = world.client("10.0.0.1"), world.client("10.0.0.2"), world.client("10.0.0.3")
    assert world.sign_in(admin, "admin", ADMIN_PW) == 200 and world.sign_in(ward, "nurse", NURSE_PW) == 200
    assert world.sign_in(sup, "sup", "sup-Velvet-Orchard-93") == 200
    nurse_id = next(u["id"] for u in admin.get("/api/manage/users").json() if u["username"] == "nurse")
    url = f"/api/manage/users/{nurse_id}/password"
    assert sup.put(url, json={"password": "Another-Long-Phrase-8"}).status_code == 403
    assert admin.put(url, json={"password": "password12"}).status_code == 422
    assert admin.put(url, json={"password": "Another-Long-Phrase-8"}).status_code == 204
    assert ward.get("/api/me").status_code == 401
    assert world.sign_in(world.client("10.0.0.4"), "nurse", NURSE_PW) == 401
    assert world.sign_in(world.client("10.0.0.4"), "nurse", "Another-Long-Phrase-8") == 200


def _cli(tmp_path: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "carealarm.cli", *args],
        env={**os.environ, "CAREALARM_DATA_DIR": str(tmp_path)},
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_refuses_weak_passwords_deactivates_and_resets(tmp_path: Path) -> None:
    """`carealarm users add` applies the policy; `deactivate` and `reset-password` end sessions."""
    upgrade(f"sqlite:///{(tmp_path / 'carealarm.sqlite3').resolve()}")
    add = ("users", "add", "anna", "--name", "Anna", "--role", "care_nurse", "--password-stdin")
    weak = _cli(tmp_path, *add, stdin="password12\n")
    assert weak.returncode == 1 and "common" in weak.stderr, weak.stderr
    assert _cli(tmp_path, *add, stdin="Granite-Meadow-Sparrow-5\n").returncode == 0
    off = _cli(tmp_path, "users", "deactivate", "anna")
    assert off.returncode == 0 and "deactivated" in off.stdout, off.stderr
    reset = _cli(tmp_path, "users", "reset-password", "anna", "--password-stdin", stdin="anna-anna-anna-1\n")
    assert reset.returncode == 1 and "user name" in reset.stderr
    reset = _cli(
        tmp_path, "users", "reset-password", "anna", "--password-stdin", stdin="Quiet-River-Stone-3\n"
    )
    assert reset.returncode == 0 and "reset" in reset.stdout
