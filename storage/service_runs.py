"""The service's own record of when it ran: one ``service_runs`` row per run of a component, kept beating.

A component starts a run when it starts and beats it every :data:`BEAT_EVERY_S` seconds; the gaps between
runs (no run, or a run whose last beat is older than twice the interval) are the service's downtime. The
reports leave that time out of device uptime: a device cannot be heard while the service is down.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable

from sqlalchemy import update
from sqlalchemy.exc import SQLAlchemyError

from .db import SessionFactory
from .models import ServiceRun

__all__ = ["BEAT_EVERY_S", "beat", "keep_beating", "start_run"]

log = logging.getLogger(__name__)

# Every 2 s: the console's banner must show a stopped component within seconds (the goal: 10 s),
# at one tiny UPDATE per component per beat. Reports take a gap of more than 30 s as downtime.
BEAT_EVERY_S = 2.0


def _wall_ms() -> int:
    return int(time.time() * 1000)


def start_run(
    sessions: SessionFactory, *, component: str, instance: str, now_ms: int, state: str | None = None
) -> int:
    """Record that ``component`` (``instance``: which process) starts now; return the run's id."""
    with sessions.begin() as session:
        run = ServiceRun(
            component=component, instance=instance, started_ms=now_ms, last_beat_ms=now_ms, state=state
        )
        session.add(run)
        session.flush()
        return run.id


def beat(sessions: SessionFactory, *, run_id: int, now_ms: int, state: str | None = None) -> None:
    """Record that the run is still going at ``now_ms`` (and what it says of itself, when it says)."""
    values: dict[str, object] = {"last_beat_ms": now_ms}
    if state is not None:
        values["state"] = state
    with sessions.begin() as session:
        session.execute(update(ServiceRun).where(ServiceRun.id == run_id).values(**values))


async def keep_beating(
    sessions: SessionFactory,
    component: str,
    instance: str,
    stop: asyncio.Event,
    every_s: float = BEAT_EVERY_S,
    clock: Callable[[], int] = _wall_ms,
    state: Callable[[], dict[str, object]] | None = None,
) -> None:
    """Start a run and beat it every ``every_s`` until ``stop`` is set, then beat once more and return.

    A database error is logged and the next beat tries again (the run is started by the first write that
    succeeds), so a database outage never stops the component; its time shows as a gap in the beats.
    """
    run_id: int | None = None
    while True:
        said = json.dumps(state(), separators=(",", ":"), sort_keys=True) if state is not None else None
        try:
            if run_id is None:
                run_id = await asyncio.to_thread(
                    start_run, sessions, component=component, instance=instance, now_ms=clock(), state=said
                )
                log.info("%s run %s started (%s)", component, run_id, instance)
            else:
                await asyncio.to_thread(beat, sessions, run_id=run_id, now_ms=clock(), state=said)
        except SQLAlchemyError as exc:
            log.warning("%s run not recorded, will try again: %s", component, str(exc)[:200])
        if stop.is_set():
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=every_s)
