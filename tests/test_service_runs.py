"""The service's record of its own runs: started, beaten while running, kept through database errors, and
written by every component the command line starts."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers import free_port, wait_for
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from storage.db import SessionFactory, make_engine, make_session_factory
from storage.models import ServiceRun
from storage.service_runs import beat, keep_beating, start_run

T0 = 1_800_000_000_000


def runs(sessions: SessionFactory) -> list[tuple[str, str, int, int]]:
    with sessions() as s:
        return [
            (r.component, r.instance, r.started_ms, r.last_beat_ms)
            for r in s.scalars(select(ServiceRun).order_by(ServiceRun.id))
        ]


class Clock:
    """A clock that moves one second each time it is read."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> int:
        self.now += 1000
        return self.now


async def until(predicate: Callable[[], object], timeout: float = 10.0) -> None:
    """Let the loop run until ``predicate`` holds (it is polled; nothing is assumed to have happened)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        await asyncio.sleep(0.005)


def test_a_run_is_started_and_beaten(sessions: SessionFactory) -> None:
    """start_run records the start as the first beat; beat moves only that run's last beat."""
    first = start_run(sessions, component="gateway", instance="host/1", now_ms=T0)
    other = start_run(sessions, component="monitor", instance="host/1", now_ms=T0 + 5)
    beat(sessions, run_id=first, now_ms=T0 + 15_000)
    assert first != other
    assert runs(sessions) == [("gateway", "host/1", T0, T0 + 15_000), ("monitor", "host/1", T0 + 5, T0 + 5)]


def test_keep_beating_beats_until_stopped_and_once_more_at_the_stop(sessions: SessionFactory) -> None:
    """One run, beaten on every tick; when stopped, a last beat marks the moment and the task ends."""
    clock = Clock()

    async def go() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(
            keep_beating(sessions, "central", "host/2", stop, every_s=0.01, clock=clock)
        )
        await until(lambda: (r := runs(sessions)) and r[0][3] >= T0 + 3000)
        stop.set()
        await asyncio.wait_for(task, 10)

    asyncio.run(go())
    [(component, instance, started, last_beat)] = runs(sessions)
    assert (component, instance, started) == ("central", "host/2", T0 + 1000)
    assert last_beat == clock.now  # the beat written when it stopped


class FlakySessions:
    """A session factory whose transactions fail while ``down`` says so (the database is unreachable)."""

    def __init__(self, real: SessionFactory) -> None:
        self.real = real
        self.down = True
        self.failures = 0

    def begin(self) -> Any:
        if self.down:
            self.failures += 1
            raise OperationalError("BEGIN", {}, ConnectionRefusedError("database unreachable"))
        return self.real.begin()


def test_keep_beating_survives_database_errors(sessions: SessionFactory) -> None:
    """Unreachable at the start and again later: the task keeps going, starts the run once the database is
    back, and beats again after the second outage."""
    flaky = FlakySessions(sessions)
    clock = Clock()

    async def go() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(keep_beating(flaky, "gateway", "gw1", stop, every_s=0.01, clock=clock))  # type: ignore[arg-type]
        await until(lambda: flaky.failures >= 3)
        flaky.down = False
        await until(lambda: runs(sessions))
        flaky.down, failures = True, flaky.failures
        await until(lambda: flaky.failures >= failures + 3)
        assert not task.done()
        before = runs(sessions)[0][3]
        flaky.down = False
        await until(lambda: runs(sessions)[0][3] > before)
        stop.set()
        await asyncio.wait_for(task, 10)

    asyncio.run(go())
    [(component, _, started, last_beat)] = runs(sessions)
    assert component == "gateway" and started > T0 + 3000 and last_beat == clock.now


def _cli(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "carealarm.cli", *args],
            env={**os.environ, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
        )


@pytest.mark.parametrize(
    ("command", "components"),
    [("run", ["central", "gateway", "monitor"]), ("gateway", ["gateway"]), ("monitor", ["monitor"])],
)
def test_each_component_the_command_line_starts_records_its_run(
    command: str, components: list[str], tmp_path: Path, embedded_broker: Any
) -> None:
    """`carealarm run` records a run per component, a component started alone its own; SIGTERM leaves
    each run with a last beat at the stop."""
    env = {
        "CAREALARM_DATA_DIR": str(tmp_path),
        "CAREALARM_MQTT_URL": embedded_broker.url,
        "CAREALARM_HTTP_PORT": str(free_port()),
        "CAREALARM_GATEWAY_NAME": f"runs-{command}",
    }
    log = tmp_path / "carealarm.log"
    assert _cli(["db", "upgrade"], env, log).wait(timeout=60) == 0
    engine = make_engine(f"sqlite:///{tmp_path / 'carealarm.sqlite3'}")
    sessions = make_session_factory(engine)
    proc = _cli([command], env, log)
    try:
        wait_for(lambda: sorted(r[0] for r in runs(sessions)) == components, 30, what="a run per component")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, log.read_text()
        recorded = runs(sessions)
        assert all(last >= started for _, _, started, last in recorded)
        assert len({instance for _, instance, _, _ in recorded}) == 1  # one process
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        engine.dispose()
