"""Schemathesis over the whole OpenAPI schema, signed in as each role: no request makes a server error.

central's app runs under a real uvicorn (in a thread, stopped at the end) on a seeded SQLite file; every
operation gets a bounded number of generated requests (valid and invalid), and each 5xx is collected with
the request that caused it, so one run reports them all. The seeded station has a dispenser, so the
schedule routes reach the command path; each role's run writes its request count to test-artifacts.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from helpers import ARTIFACTS, free_port, wait_for

from central.app import CentralContext, create_app
from central.auth import COOKIE_NAME, create_session, hash_password
from central.feed import Broadcaster
from storage.db import make_engine, make_session_factory, upgrade
from storage.models import Alert
from storage.registry import add_client, add_device, add_user

schemathesis = pytest.importorskip("schemathesis", reason="SCHEMA TESTS NOT RUN: schemathesis missing")
hypothesis = pytest.importorskip("hypothesis")
uvicorn = pytest.importorskip("uvicorn")

# Enough to reach past validation into the handlers of ~60 operations; the roles refused most routes
# (403 before any handler) get fewer.
MAX_EXAMPLES = {"admin": 25, "supervisor": 15, "care_nurse": 10, "district_nurse": 10}
ROLES = tuple(MAX_EXAMPLES)
# Besides the generated values, integer path parameters are also tried just past SQL's BIGINT and below 1.
EDGES = [None, None, 2**63, -1]
# Signing out would end the session the run signs in with; it is a plain delete of one row anyway.
EXCLUDED = {("DELETE", "/api/session")}
# Server errors found in modules this test's author does not own, reported to their owners: an id past
# BIGINT reaches the database driver (OverflowError on SQLite, NumericValueOutOfRange on PostgreSQL).
# Each is tolerated here until fixed (bound the id: Path(ge=1, le=2**53 - 1)); then delete its line.
KNOWN_ELSEWHERE: dict[str, str] = {}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str]]]:
    """A running app on a seeded database, and a session token per role."""
    tmp_path = tmp_path_factory.mktemp("schema")
    url = f"sqlite:///{tmp_path / 'carealarm.sqlite3'}"
    upgrade(url)
    engine = make_engine(url)
    sessions = make_session_factory(engine)
    now = int(time.time() * 1000)
    with sessions.begin() as s:
        users = {
            role: add_user(
                s,
                username=role,
                display_name=role.title(),
                role=role,
                password_hash=hash_password(f"{role}-pw"),
                district="Zuid" if role == "district_nurse" else "",
                now_ms=now,
            )
            for role in ROLES
        }
        for i in (1, 2):
            client = add_client(s, name=f"Client {i}", district="Zuid", now_ms=now)
            add_device(s, device_id=f"btn-{i}", client_id=client.id, kind="alarm_button", now_ms=now)
            add_device(s, device_id=f"vid-{i}", client_id=client.id, kind="video", now_ms=now)
            add_device(s, device_id=f"med-{i}", client_id=client.id, kind="dispenser", now_ms=now)
            s.add(
                Alert(
                    client_id=client.id, kind="alarm", priority=1, state="open", opened_ms=now,
                    last_event_ms=now, count=1, version=1,
                )
            )  # fmt: skip
        tokens = {role: create_session(s, user.id, now, 1.0) for role, user in users.items()}
    broadcaster = Broadcaster(sessions, poll_interval_s=0.5)
    ctx = CentralContext(sessions=sessions, broadcaster=broadcaster, notify_alerts=broadcaster.wake)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(ctx), host="127.0.0.1", port=port, log_level="critical")
    )
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started, 20, what="uvicorn to start")
        yield f"http://127.0.0.1:{port}", tokens
    finally:
        server.should_exit = True
        thread.join(timeout=20)
        engine.dispose()


def _fuzz(operation: Any, base_url: str, token: str, examples: int, failures: dict[str, str]) -> int:
    """Fuzz one operation; the number of requests made."""
    made = 0
    settings = hypothesis.settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(hypothesis.HealthCheck),
        phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
    )

    @settings
    @hypothesis.given(case=operation.as_strategy(), edge=hypothesis.strategies.sampled_from(EDGES))
    def run(case: Any, edge: int | None) -> None:
        nonlocal made
        if operation.label in failures:
            return
        if edge is not None:
            # Schemathesis rarely draws ids past BIGINT; the database driver is where those used to break.
            for name, value in (case.path_parameters or {}).items():
                if isinstance(value, int):
                    case.path_parameters[name] = edge
        response = case.call(base_url=base_url, cookies={COOKIE_NAME: token}, timeout=15)
        made += 1
        if response.status_code >= 500:
            failures[operation.label] = (
                f"{response.status_code} for {case.method} {case.formatted_path} "
                f"query={case.query} body={case.body!r}: {response.text[:200]}"
            )

    run()
    return made


@pytest.mark.parametrize("role", ROLES)
def test_no_request_makes_a_server_error(served: tuple[str, dict[str, str]], role: str) -> None:
    """Generated requests to every operation, signed in as this role, never get a 5xx."""
    base_url, tokens = served
    ARTIFACTS.mkdir(exist_ok=True)
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    failures: dict[str, str] = {}
    labels = []
    made = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        if (operation.method.upper(), operation.path) in EXCLUDED:
            continue
        labels.append(operation.label)
        made += _fuzz(operation, base_url, tokens[role], MAX_EXAMPLES[role], failures)
    assert len(labels) > 10, labels
    report = "\n".join(f"{label}: {detail}" for label, detail in sorted(failures.items()))
    summary = f"{role}: {made} requests to {len(labels)} operations, {len(failures)} with a server error\n"
    (ARTIFACTS / f"schema-server-errors-{role}.txt").write_text(summary + report + "\n")
    print(summary, end="")
    new = {label: detail for label, detail in failures.items() if label not in KNOWN_ELSEWHERE}
    assert new == {}, "\n".join(f"{label}: {detail}" for label, detail in new.items())
