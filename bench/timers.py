"""Benchmark: escalation timers at 100,000 scheduled doses (issue: "how many pending timers one monitor
holds and how late steps fire").

Two measurements, on SQLite and PostgreSQL:

- **peak**: 100,000 doses all due at the same moment (everybody's 08:00 pills), each with its reminder step;
  the monitor's step runner works them off — how late is the last one, and what is the p50/p99 lateness;
- **holding**: 100,000 pending one-shot APScheduler jobs in one process (the in-process waker) — memory and
  the time to schedule them. (The monitor only keeps a two-minute horizon in the waker; the database holds
  every pending step, so this is the upper bound.)

Run: ``python -m bench.timers [--doses N] [--out FILE.json]``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import resource
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, insert, select, text
from sqlalchemy.engine import make_url

from monitor.service import Monitor
from storage.db import make_engine, make_session_factory, upgrade
from storage.models import DoseInstance, EscalationStep
from storage.registry import add_client, add_device

PG_SERVER = os.environ.get("CAREALARM_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


def _now() -> int:
    return int(time.time() * 1000)


def peak(url: str, doses: int) -> dict[str, Any]:
    """All doses due at once: work them off with the real step runner and measure the lateness."""
    upgrade(url)
    engine = make_engine(url)
    sessions = make_session_factory(engine)
    clients = 1000
    with sessions.begin() as s:
        for i in range(clients):
            c = add_client(s, name=f"c{i}", now_ms=_now())
            add_device(s, device_id=f"med-{i}", client_id=c.id, kind="dispenser", now_ms=_now(), password="x")
    due = _now() + 5_000
    with sessions.begin() as s:
        s.execute(
            insert(DoseInstance),
            [
                {
                    "client_id": 1 + i % clients,
                    "device_id": f"med-{i % clients}",
                    "dose_id": f"d{i}",
                    "due_ms": due,
                    "state": "pending",
                    "reminded": False,
                }
                for i in range(doses)
            ],
        )
        ids = list(s.scalars(select(DoseInstance.id)))
        s.execute(
            insert(EscalationStep),
            [
                {
                    "dose_instance_id": i,
                    "action": "dose_remind",
                    "level": 0,
                    "due_ms": due,
                    "state": "pending",
                    "created_ms": _now(),
                }
                for i in ids
            ],
        )
    sent = 0

    def remind(_device: str, _payload: bytes) -> bool:
        nonlocal sent
        sent += 1
        return True

    monitor = Monitor(sessions=sessions, notify_alerts=lambda: None, publish=remind)
    while _now() < due:
        time.sleep(0.01)
    started = time.monotonic()
    while monitor.run_steps():
        pass
    elapsed = time.monotonic() - started
    with sessions() as s:
        late = sorted(s.scalars(select(EscalationStep.late_ms)))
    engine.dispose()
    return {
        "doses": doses,
        "reminders_sent": sent,
        "seconds_to_work_off": round(elapsed, 2),
        "steps_per_second": round(doses / elapsed),
        "late_ms_p50": int(statistics.median(late)),
        "late_ms_p99": late[int(len(late) * 0.99) - 1],
        "late_ms_max": late[-1],
    }


def holding(jobs: int) -> dict[str, Any]:
    """Memory and time for ``jobs`` pending one-shot jobs in APScheduler (the monitor's waker)."""
    from apscheduler.schedulers.asyncio import AsyncIOScheduler

    async def go() -> dict[str, Any]:
        scheduler = AsyncIOScheduler(timezone=dt.UTC)
        scheduler.start()
        before = _rss_mb()
        started = time.monotonic()
        base = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
        for i in range(jobs):
            scheduler.add_job(
                _noop,
                "date",
                id=f"step-{i}",
                run_date=base + dt.timedelta(milliseconds=i),
                misfire_grace_time=None,
            )
        elapsed = time.monotonic() - started
        after = _rss_mb()
        scheduler.shutdown(wait=False)
        return {
            "jobs": jobs,
            "seconds_to_schedule": round(elapsed, 2),
            "rss_mb_added": round(after - before, 1),
        }

    return asyncio.run(go())


def _noop() -> None:
    pass


def _rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--doses", type=int, default=100_000)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    results: dict[str, Any] = {"load_before": os.getloadavg()}
    with tempfile.TemporaryDirectory() as tmp:
        results["peak_sqlite"] = peak(f"sqlite:///{tmp}/timers.sqlite3", args.doses)
        print("sqlite:", results["peak_sqlite"], flush=True)
    name = f"carealarm_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(PG_SERVER, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        url = make_url(PG_SERVER).set(database=name).render_as_string(hide_password=False)
        results["peak_postgres"] = peak(url, args.doses)
        print("postgres:", results["peak_postgres"], flush=True)
    except Exception as exc:  # a machine without PostgreSQL still gets the SQLite figures
        results["peak_postgres"] = f"not measured: {exc.__class__.__name__}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
    results["holding"] = holding(args.doses)
    print("apscheduler:", results["holding"], flush=True)
    results["load_after"] = os.getloadavg()
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
