"""The monitor process: device events become alerts, due steps run on time, devices and doses are swept.

Timers: ``escalation_steps`` is the source of truth. APScheduler is only the waker: at start, and whenever
steps may have been added, the steps due within ``_HORIZON_MS`` get a one-shot job at their due time; the
job just wakes the step runner, which claims due steps from the database. Overdue steps (the monitor was
down) run at once and are counted as late. A slow safety poll covers steps other processes add.
(APScheduler 3's own job stores are not used: one scheduler per store, and a one-shot job leaves the
store before it runs — a crash there would lose the step.)
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Iterator
from zoneinfo import ZoneInfo

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from care.alert_store import PolicyBook
from care.commands import CommandSender, Publish
from care.doses import plan_doses
from care.steps import due_soon, run_due_steps
from storage.db import SessionFactory
from storage.models import MedicationDose

from .devices import sweep_devices
from .events import handle_pending_events

__all__ = ["Monitor", "MonitorMetrics"]

log = logging.getLogger(__name__)

_HORIZON_MS = 120_000  # steps due within this get a scheduler job now; later ones at a later refresh
_SAFETY_POLL_S = 5.0  # how often the step runner looks even when nothing woke it
_SWEEP_S = 10.0  # silent devices, low batteries
_PLAN_S = 600.0  # new dose instances for the coming day


class MonitorMetrics:
    def __init__(self) -> None:
        self.events = 0
        self.steps = 0
        self.late_steps = 0
        self.max_late_ms = 0
        self.scheduled = 0
        self.sweeps = 0

    def render(self) -> str:
        """The monitor's metrics in the Prometheus text format (prometheus_client renders them)."""
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_MonitorCollector(self))
        return generate_latest(registry).decode()


class _MonitorCollector(Collector):
    def __init__(self, metrics: MonitorMetrics) -> None:
        self._m = metrics

    def collect(self) -> Iterator[Metric]:
        m = self._m
        yield CounterMetricFamily(
            "carealarm_monitor_events_handled", "Device events handled.", value=m.events
        )
        yield CounterMetricFamily("carealarm_monitor_steps_run", "Escalation steps run.", value=m.steps)
        yield CounterMetricFamily(
            "carealarm_monitor_steps_late",
            "Steps that ran more than 1 s after they were due.",
            value=m.late_steps,
        )
        yield GaugeMetricFamily(
            "carealarm_monitor_step_max_late_ms", "The latest a step has run, in ms.", value=m.max_late_ms
        )
        yield GaugeMetricFamily(
            "carealarm_monitor_timers_scheduled", "Steps with a wake-up in the scheduler.", value=m.scheduled
        )
        yield CounterMetricFamily(
            "carealarm_monitor_device_sweeps",
            "Sweeps for silent devices and low batteries done.",
            value=m.sweeps,
        )


class Monitor:
    """Handle device events, escalation steps, device sweeps and dose planning until stopped."""

    def __init__(
        self,
        *,
        sessions: SessionFactory,
        notify_alerts: Callable[[], None],
        publish: Publish | None = None,
        notify_people: Callable[[], None] = lambda: None,
        channels: frozenset[str] = frozenset(),
        timezone: str = "Europe/Amsterdam",
        poll_interval_s: float = 1.0,
        sweep_interval_s: float = _SWEEP_S,
        clock_ms: Callable[[], int] = lambda: int(time.time() * 1000),
    ) -> None:
        self._sessions = sessions
        self._notify_alerts = notify_alerts
        self._commands = CommandSender(sessions, publish, clock_ms)
        self._notify_people = notify_people
        self._channels = channels
        self._tz = ZoneInfo(timezone)
        self._poll_interval_s = poll_interval_s
        self._sweep_interval_s = sweep_interval_s
        self._clock_ms = clock_ms
        self._wake_events = asyncio.Event()
        self._wake_steps = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._scheduled: dict[int, int] = {}
        self._lock = threading.Lock()
        self.metrics = MonitorMetrics()
        self._worked_ms: dict[str, int] = {}  # each loop's last successful round (its own health)

    def health_state(self) -> dict[str, object]:
        """What the monitor says of itself at each beat: when each of its loops last did a round."""
        return {"loops_ms": dict(self._worked_ms), "events": self.metrics.events, "steps": self.metrics.steps}

    def wake(self) -> None:
        """Thread-safe: there are new device events (called from the hint listener's thread)."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._wake_events.set)

    # -- one round of each kind of work (also what the tests drive) -------------------------------
    def handle_events(self) -> int:
        with self._sessions.begin() as session:
            # Small batches: an alarm that arrives meanwhile waits for one batch at most (alarms come first).
            out = handle_pending_events(session, self._clock_ms(), self._channels, limit=25, tz=self._tz)
        self.metrics.events += out.handled
        if out.alerts_changed:
            self._after_alert_change()
        return out.handled

    def run_steps(self) -> int:
        with self._sessions.begin() as session:
            run = run_due_steps(session, self._clock_ms(), self._channels, tz=self._tz)
        self.metrics.steps += run.ran
        self.metrics.late_steps += run.late
        self.metrics.max_late_ms = max(self.metrics.max_late_ms, run.max_late_ms)
        if run.late:
            log.warning("monitor: %d step(s) ran late (up to %d ms)", run.late, run.max_late_ms)

        for device_id, dose_id in run.reminders:  # recorded, then published, like every command
            self._commands.send(device_id, "remind", {"dose_id": dose_id})
        if run.alerts_changed:
            self._after_alert_change()
        return run.ran

    def sweep(self) -> None:
        with self._sessions.begin() as session:
            changed = sweep_devices(session, self._clock_ms(), self._channels)
        self.metrics.sweeps += 1
        if changed:
            self._after_alert_change()

    def plan(self) -> int:
        with self._sessions.begin() as session:
            clients = set(session.scalars(select(MedicationDose.client_id)))
            book = PolicyBook(session)
            grace = {c: book.of(c).dose_grace_s for c in clients}
            return plan_doses(session, self._clock_ms(), self._tz, grace)

    def pending_timers(self) -> list[tuple[int, int]]:
        with self._sessions() as session:
            return due_soon(session, self._clock_ms() + _HORIZON_MS)

    def _after_alert_change(self) -> None:
        self._notify_alerts()
        self._notify_people()
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._wake_steps.set)  # new steps may have been written

    # -- the process -------------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        self._loop = asyncio.get_running_loop()
        scheduler = AsyncIOScheduler(timezone=dt.UTC)
        scheduler.start()
        try:
            await asyncio.gather(
                self._loop_events(stop),
                self._loop_steps(stop, scheduler),
                self._every(stop, self._sweep_interval_s, self.sweep, "device sweep"),
                self._every(stop, _PLAN_S, self.plan, "dose planning"),
            )
        finally:
            scheduler.shutdown(wait=False)

    async def _loop_events(self, stop: asyncio.Event) -> None:
        await self._retrying(
            stop, self._wake_events, self._poll_interval_s, self.handle_events, "event handling"
        )

    async def _loop_steps(self, stop: asyncio.Event, scheduler: AsyncIOScheduler) -> None:
        def refresh_and_run() -> int:
            ran = self.run_steps()
            self._schedule(scheduler, self.pending_timers())
            return ran

        await self._retrying(stop, self._wake_steps, _SAFETY_POLL_S, refresh_and_run, "escalation steps")

    def _schedule(self, scheduler: AsyncIOScheduler, timers: list[tuple[int, int]]) -> None:
        """Give every pending step due soon a one-shot wake-up at its due time (thread-safe)."""
        loop = self._loop
        assert loop is not None
        with self._lock:
            fresh = [(i, d) for i, d in timers if self._scheduled.get(i) != d]
            self._scheduled = dict(timers)
            self.metrics.scheduled = len(self._scheduled)

        def add() -> None:
            for step_id, due_ms in fresh:
                scheduler.add_job(
                    self._wake_steps.set,
                    "date",
                    id=f"step-{step_id}",
                    replace_existing=True,
                    run_date=dt.datetime.fromtimestamp(due_ms / 1000, dt.UTC),
                    misfire_grace_time=None,
                )

        loop.call_soon_threadsafe(add)

    async def _every(
        self, stop: asyncio.Event, interval_s: float, work: Callable[[], object], name: str
    ) -> None:
        await self._retrying(stop, asyncio.Event(), interval_s, work, name)

    async def _retrying(
        self,
        stop: asyncio.Event,
        wake: asyncio.Event,
        interval_s: float,
        work: Callable[[], object],
        name: str,
    ) -> None:
        """Run ``work`` in a thread whenever woken (or every ``interval_s``), surviving database outages."""
        delay = 0.2
        while not stop.is_set():
            wake.clear()
            try:
                did = await asyncio.to_thread(work)
                delay = 0.2
                self._worked_ms[name] = self._clock_ms()
            except IntegrityError:
                # Another monitor opened the same client's alert at the same moment: take it again.
                log.info("monitor: %s met a concurrent change; retrying", name)
                continue
            except SQLAlchemyError as exc:
                log.error(
                    "monitor: %s: database unavailable (%s); retrying in %.1fs",
                    name,
                    exc.__class__.__name__,
                    delay,
                )
                await _sleep_or_stop(stop, delay)
                delay = min(delay * 2, 5.0)
                continue
            if isinstance(did, int) and did:
                continue  # there may be more (events, due steps)
            await _wait_any(stop, wake, interval_s)


async def _wait_any(stop: asyncio.Event, wake: asyncio.Event, timeout: float) -> None:
    waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(wake.wait())]
    await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    for w in waiters:
        w.cancel()


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    await _wait_any(stop, asyncio.Event(), seconds)
