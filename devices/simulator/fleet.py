"""A fleet of simulated devices in one process, driven by a named, seeded scenario (repeatable runs).

``run_fleet`` connects every device (spread over the scenario's ramp, a bounded number at a time), then
plays the scenario's timeline (``scenarios.py``) against them in real time until ``stop`` is set or the
duration has passed. Scenario ``demo`` is what ``make demo`` runs: one alarm ~5 s after the start, then
about one every ``alarm_every_s`` across the fleet.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import resource
import time
from collections.abc import Callable
from pathlib import Path

from carealarm.mqtt import MqttConfig

from .device import Credentials, FleetStats, SimDevice
from .scenarios import SCENARIOS, Scenario, clock_offset_ms, connect_at_s, is_flaky, timeline

__all__ = [
    "FleetStats",
    "format_progress",
    "load_fleet",
    "raise_fd_limit",
    "resolve_scenario",
    "run_fleet",
    "save_fleet",
]

log = logging.getLogger(__name__)

# At most this many CONNECTs in flight at once: Mosquitto's listen backlog is small, and a burst of
# thousands of SYNs would be dropped and retried by the kernel seconds later.
_CONNECT_SLOTS = 256
# A flaky link loses this share of the application acks (the device then resends after 5 s).
_FLAKY_ACK_LOSS = 0.3
# How often unacknowledged events are looked at for a resend, and the progress shown.
_SWEEP_S = 1.0


def save_fleet(path: Path, creds: list[Credentials]) -> None:
    """Write device credentials for the simulator (mode 0600; as a provisioning export would be)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    body = json.dumps([c.__dict__ for c in creds], indent=1)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(body)


def load_fleet(path: Path) -> list[Credentials]:
    return [Credentials(**item) for item in json.loads(path.read_text())]


def raise_fd_limit(wanted: int) -> int:
    """Raise this process's open-file limit towards ``wanted`` (at most the hard limit); return it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return int(soft)


def resolve_scenario(
    name: str, *, alarm_every_s: float | None = None, heartbeat_s: float | None = None
) -> Scenario:
    """Return scenario ``name`` with the given overrides; KeyError names the known ones."""
    try:
        scenario = SCENARIOS[name]
    except KeyError:
        raise KeyError(f"unknown scenario {name!r}; known: {', '.join(sorted(SCENARIOS))}") from None
    if alarm_every_s is not None and scenario.alarm_every_s is not None:
        scenario = dataclasses.replace(scenario, alarm_every_s=alarm_every_s)
    if heartbeat_s is not None:
        scenario = dataclasses.replace(scenario, heartbeat_s=heartbeat_s)
    return scenario


def format_progress(stats: FleetStats, elapsed_s: float) -> str:
    """One status line: connections, what was sent, what is still waiting for an ack."""
    alarm_ack = stats.ack_seconds.get("alarm", [])
    last = f" last alarm ack {alarm_ack[-1] * 1000:.0f} ms" if alarm_ack else ""
    return (
        f"{elapsed_s:6.0f}s  connected {stats.connected:,}/{stats.devices:,}  "
        f"heartbeats {stats.heartbeats:,}  alarms {stats.alarms:,} (cancelled {stats.cancels:,})  "
        f"doses {stats.doses:,}  acked {stats.acked:,}  resent {stats.resent:,}  "
        f"drops {stats.drops:,} freezes {stats.freezes:,}  refused connects {stats.connect_failures:,}{last}"
    )


async def run_fleet(
    creds: list[Credentials],
    broker: MqttConfig,
    stop: asyncio.Event,
    *,
    seed: int = 1,
    scenario: str | Scenario = "demo",
    heartbeat_s: float | None = None,
    alarm_every_s: float | None = None,
    duration_s: float | None = None,
    stats: FleetStats | None = None,
    progress: Callable[[FleetStats, float], None] | None = None,
) -> FleetStats:
    """Run the fleet until ``stop`` is set (or ``duration_s`` has passed); return what it did."""
    plan = (
        scenario
        if isinstance(scenario, Scenario)
        else resolve_scenario(scenario, alarm_every_s=alarm_every_s, heartbeat_s=heartbeat_s)
    )
    stats = stats if stats is not None else FleetStats()
    stats.devices = len(creds)
    raise_fd_limit(len(creds) + 1024)
    slots = asyncio.Semaphore(_CONNECT_SLOTS)
    wall_ms = time.time() * 1000 - time.monotonic() * 1000  # device clocks: wall time + their offset
    devices = []
    for i, c in enumerate(creds):
        offset = clock_offset_ms(plan, seed, i)
        devices.append(
            SimDevice(
                c,
                broker,
                clock_ms=_device_clock(wall_ms, offset),
                stats=stats,
                keepalive_s=plan.keepalive_s,
                lose_ack_share=_FLAKY_ACK_LOSS if is_flaky(plan, seed, i) else 0.0,
                seed=seed,
                connect_slots=slots,
            )
        )
    log.info(
        "simulator: scenario %s, seed %d, %d devices (%d alarm buttons, %d dispensers)",
        plan.name,
        seed,
        len(devices),
        sum(c.kind == "alarm_button" for c in creds),
        sum(c.kind == "dispenser" for c in creds),
    )
    loop = asyncio.get_running_loop()
    start = loop.time()
    for i, device in enumerate(devices):
        loop.call_at(start + connect_at_s(plan, i, len(devices)), device.start)
    driver = asyncio.create_task(_drive(plan, devices, seed, start), name="simulator-timeline")
    sweeper = asyncio.create_task(_sweep(devices, stats, start, progress), name="simulator-sweep")
    waiters = [driver, asyncio.ensure_future(stop.wait())]
    try:
        await asyncio.wait(waiters, timeout=duration_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (driver, sweeper, waiters[1]):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if driver.done() and not driver.cancelled() and driver.exception() is not None:
            log.error("simulator: timeline failed: %r", driver.exception())
        await asyncio.gather(*(d.stop() for d in devices), return_exceptions=True)
        if progress is not None:
            progress(stats, loop.time() - start)
    return stats


def _device_clock(wall_ms: float, offset_ms: int) -> Callable[[], int]:
    """A device's clock: this machine's wall clock (fixed at the start) plus the device's own error."""

    def now_ms() -> int:
        return int(wall_ms + time.monotonic() * 1000) + offset_ms

    return now_ms


async def _drive(plan: Scenario, devices: list[SimDevice], seed: int, start: float) -> None:
    loop = asyncio.get_running_loop()
    kinds = [d.creds.kind for d in devices]
    burst = 0
    for action in timeline(plan, kinds, seed):
        delay = start + action.at_s - loop.time()
        if delay > 0:
            burst = 0
            await asyncio.sleep(delay)
        else:
            burst += 1
            if burst % 500 == 0:  # running behind: let the network breathe between batches
                await asyncio.sleep(0)
        device = devices[action.device]
        what = action.what
        if what == "heartbeat":
            # The protocol's interval_s is 5 s at least; a faster (load-test) rate still reports 5.
            interval_s = max(5, round(plan.heartbeat_s))
            device.heartbeat(battery=40 + (action.device * 37) % 61, interval_s=interval_s)
        elif what == "alarm":
            msg_id = device.press_alarm(action.arg)
            log.info(
                "simulator: %s (%s) pressed the alarm (%s)",
                device.creds.device_id,
                device.creds.client_name,
                msg_id,
            )
        elif what == "cancel":
            device.cancel_alarm()
        elif what == "dose_due":
            device.dose_event("due", action.arg, due_ts=device.clock_ms())
        elif what in ("dose_taken", "dose_missed"):
            device.dose_event(what.removeprefix("dose_"), action.arg)
        elif what == "drop":
            device.drop(action.duration_s)
        elif what == "freeze":
            device.freeze(action.duration_s)


async def _sweep(
    devices: list[SimDevice],
    stats: FleetStats,
    start: float,
    progress: Callable[[FleetStats, float], None] | None,
) -> None:
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(_SWEEP_S)
        now = time.monotonic()
        for device in devices:
            if device.pending():
                device.resend_due(now)
        if progress is not None:
            progress(stats, loop.time() - start)
