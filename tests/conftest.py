"""Shared fixtures: real databases (SQLite file, PostgreSQL) and real brokers (embedded and system Mosquitto).

PostgreSQL: each test gets its own database, created and dropped here (CAREALARM_TEST_PG_URL names the
server; default the local one with trust auth). System broker: 127.0.0.1:1883 (CAREALARM_TEST_MQTT_URL).
Where either is absent the test is skipped with the reason printed in the summary (pytest -ra).
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import free_port
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from carealarm.broker import EmbeddedBroker
from messaging.mqtt import MqttConfig
from storage.db import SessionFactory, make_engine, make_session_factory, upgrade

PG_SERVER_URL = os.environ.get(
    "CAREALARM_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
SYSTEM_MQTT_URL = os.environ.get("CAREALARM_TEST_MQTT_URL", "mqtt://127.0.0.1:1883")


def _pg_reachable() -> str | None:
    try:
        engine = create_engine(PG_SERVER_URL, connect_args={"connect_timeout": 3})
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        engine.dispose()
        return None
    except Exception as exc:
        return f"{exc.__class__.__name__}: {str(exc).splitlines()[0][:150]}"


def _tcp_open(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex((host, port)) == 0


@pytest.fixture(scope="session")
def pg_server() -> str:
    problem = _pg_reachable()
    if problem:
        pytest.skip(f"PostgreSQL NOT TESTED: no server at {PG_SERVER_URL} ({problem})")
    return PG_SERVER_URL


@pytest.fixture
def pg_url(pg_server: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test; dropped afterwards."""
    name = f"carealarm_t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(pg_server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(pg_server).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database of each kind the product supports."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'carealarm.sqlite3'}"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def sessions(db_url: str) -> Iterator[SessionFactory]:
    """A session factory on a migrated database (Alembic, as in production)."""
    upgrade(db_url)
    engine = make_engine(db_url)
    try:
        yield make_session_factory(engine)
    finally:
        engine.dispose()


@pytest.fixture
def embedded_broker(tmp_path: Path) -> Iterator[EmbeddedBroker]:
    """The embedded Mosquitto (auth, ACLs, persistence) on a free port; devices are added with reload()."""
    broker = EmbeddedBroker(tmp_path / "broker", free_port())
    broker.start([])
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def system_broker() -> MqttConfig:
    cfg = MqttConfig.from_url(SYSTEM_MQTT_URL)
    if not _tcp_open(cfg.host, cfg.port):
        pytest.skip(
            f"SYSTEM BROKER NOT TESTED: nothing listens at {cfg.host}:{cfg.port} (CAREALARM_TEST_MQTT_URL)"
        )
    return cfg


# `make test` runs the suite on two workers (pytest-xdist, ``--dist loadgroup``): each module stays on one
# worker, so its module-scoped stations and browsers start once. The modules below share one worker and run
# one after another: they use the system Mosquitto (a gateway there hears every device of the run, so two at
# once would answer each other's devices), or measure timing (video frame rates, the chain's fault table)
# that a second heavy scenario beside them would skew.
_ONE_WORKER = frozenset(
    {
        "test_calls_e2e",
        "test_chain_faults",
        "test_e2e_console",
        "test_gateway",
        "test_gateway_faults",
        "test_monitor_process",
        "test_never_hide",
    }
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        module = item.path.stem
        item.add_marker(pytest.mark.xdist_group("one-worker" if module in _ONE_WORKER else module))
