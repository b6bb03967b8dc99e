"""A fleet of simulated devices in one process, driven by a named, seeded scenario (repeatable runs).

``run_fleet`` connects every device (spread over the scenario's ramp, a bounded number at a time), then
plays the scenario's timeline (``scenarios.py``, or a scripted scenario's own plan such as ``careday.py``)
against them in real time until ``stop`` is set or the duration has passed (after a scripted plan the
devices go on heartbeating, so the console stays as the plan left it).
Scenario ``demo`` is what ``make demo`` runs: one alarm ~5 s after the start, then about one every
``alarm_every_s`` across the fleet. A scripted scenario logs its plan first, then one line for every
action that plays one of its cases, with the run time and the simulated day's clock.
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
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Final

from messaging.mqtt import MqttConfig

from . import careday
from .device import Credentials, FleetStats, SimDevice
from .scenarios import (
    SCENARIOS,
    Action,
    Scenario,
    after_the_plan,
    clock_offset_ms,
    connect_at_s,
    describe,
    is_flaky,
    timeline,
)

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
    name: str,
    *,
    alarm_every_s: float | None = None,
    heartbeat_s: float | None = None,
    compression: float | None = None,
) -> Scenario:
    """Return scenario ``name`` with the given overrides.

    KeyError names the known scenarios; ValueError says an override does not fit the scenario.
    """
    try:
        scenario = SCENARIOS[name]
    except KeyError:
        raise KeyError(f"unknown scenario {name!r}; known: {', '.join(sorted(SCENARIOS))}") from None
    if alarm_every_s is not None and scenario.alarm_every_s is not None:
        scenario = dataclasses.replace(scenario, alarm_every_s=alarm_every_s)
    if heartbeat_s is not None:
        scenario = dataclasses.replace(scenario, heartbeat_s=heartbeat_s)
    if compression is not None:
        if scenario.script is None:
            raise ValueError(f"scenario {name} runs in real time: compression is for scripted scenarios")
        if compression <= 0:
            raise ValueError("compression must be positive")
        scenario = dataclasses.replace(scenario, compression=compression)
    return scenario


# Scripted scenarios: (scenario, device kinds, client names, seed, dose-id tag) -> the whole run's actions.
_SCRIPTS: Final[dict[str, Callable[[Scenario, Sequence[str], Sequence[str], int, str], list[Action]]]] = {
    "care-day": careday.timeline,
}


def plan_actions(
    scenario: Scenario, creds: Sequence[Credentials], seed: int, tag: str = "d"
) -> Iterable[Action]:
    """The scenario's actions for this fleet, in time order (endless for the rate scenarios)."""
    kinds = [c.kind for c in creds]
    if scenario.script is None:
        return timeline(scenario, kinds, seed)
    return _SCRIPTS[scenario.script](scenario, kinds, [c.client_name for c in creds], seed, tag)


def action_line(
    scenario: Scenario, action: Action, creds: Credentials, *, at_s: float, msg_id: str | None = None
) -> str:
    """Say what a device does (or did) at ``at_s`` seconds into the run; scripted: with the day's clock."""
    who = f"{creds.device_id} ({creds.client_name})" if creds.client_name else creds.device_id
    sent = f"; msg_id {msg_id}" if msg_id else ""
    if scenario.script is None:
        return f"{who} {describe(action)}{sent}"
    clock = careday.day_clock(scenario, at_s)
    return f"{at_s:6.1f} s  day {clock}  [{action.case}] {who}: {describe(action)}{sent}"


def _log_plan(scenario: Scenario, actions: list[Action], creds: Sequence[Credentials]) -> None:
    day_s = (careday.DAY_END_S - careday.DAY_START_S) / scenario.compression
    log.info(
        "%s: the day 07:00-23:00 compressed %gx (one second of the run is %g min of the day) starts "
        "%.0f s into the run and ends at %.0f s; the plan ends at %.0f s, then the devices go on "
        "heartbeating until stopped (Ctrl+C, --duration)",
        scenario.name,
        scenario.compression,
        scenario.compression / 60,
        careday.LEAD_S,
        careday.LEAD_S + day_s,
        actions[-1].at_s if actions else 0.0,
    )
    for case in careday.CASES:
        log.info("%s plan  case %s: %s", scenario.name, case.key, case.title)
        for action in actions:
            if case.key in action.case.split(","):
                line = action_line(scenario, action, creds[action.device], at_s=action.at_s)
                log.info("%s plan  %s", scenario.name, line)


def format_progress(stats: FleetStats, elapsed_s: float) -> str:
    """One status line: connections, what was sent, what is still waiting for an ack."""
    alarm_ack = stats.ack_seconds.get("alarm", [])
    last = f" last alarm ack {alarm_ack[-1] * 1000:.0f} ms" if alarm_ack else ""
    return (
        f"{elapsed_s:6.0f}s  connected {stats.connected:,}/{stats.devices:,}  "
        f"heartbeats {stats.heartbeats:,}  alarms {stats.alarms:,} (cancelled {stats.cancels:,})  "
        f"doses {stats.doses:,}  faults {stats.faults:,}  commands {stats.commands:,}  "
        f"acked {stats.acked:,}  resent {stats.resent:,}  "
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
        "simulator: scenario %s, seed %d, %d devices (%d alarm buttons, %d dispensers, %d video tablets)",
        plan.name,
        seed,
        len(devices),
        sum(c.kind == "alarm_button" for c in creds),
        sum(c.kind == "dispenser" for c in creds),
        sum(c.kind == "video" for c in creds),
    )
    # Dose ids start with the run's start time, so two runs against one service keep their doses apart.
    actions = plan_actions(plan, creds, seed, tag=time.strftime("d%m%d%H%M"))
    then: Iterable[Action] | None = None
    if plan.script is not None:
        actions = list(actions)
        _log_plan(plan, actions, creds)
        then = after_the_plan(actions, plan.heartbeat_s)
    loop = asyncio.get_running_loop()
    start = loop.time()
    for i, device in enumerate(devices):
        loop.call_at(start + connect_at_s(plan, i, len(devices)), device.start)
    driver = asyncio.create_task(_play(plan, actions, then, devices, start), name="simulator-timeline")
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


def _heartbeat(device: SimDevice, action: Action, plan: Scenario) -> str | None:
    # The protocol's interval_s is 5 s at least; a faster (load-test) rate still reports 5.
    device.heartbeat(battery=action.value, interval_s=max(5, round(plan.heartbeat_s)))
    return None


def _alarm_reused_id(device: SimDevice, action: Action, _plan: Scenario) -> str | None:
    if device.last_alarm is not None:
        device.rewind_counter(device.last_alarm)
    else:
        log.warning("simulator: %s has no alarm whose msg_id it could reuse", device.creds.device_id)
    return device.press_alarm(action.arg)


def _drop(device: SimDevice, action: Action, _plan: Scenario) -> str | None:
    device.drop(action.duration_s)
    return None


def _back(device: SimDevice, _action: Action, _plan: Scenario) -> str | None:
    return None  # the drop's own timer brings the device back; this action is there to be logged


def _freeze(device: SimDevice, action: Action, _plan: Scenario) -> str | None:
    device.freeze(action.duration_s)
    return None


# What a device does for each kind of action; the msg_id of the event it sent, if any, is logged.
_DO: Final[dict[str, Callable[[SimDevice, Action, Scenario], str | None]]] = {
    "heartbeat": _heartbeat,
    "alarm": lambda d, a, _p: d.press_alarm(a.arg),
    "alarm_reused_id": _alarm_reused_id,
    "cancel": lambda d, _a, _p: d.cancel_alarm(),
    "dose_due": lambda d, a, _p: d.dose_event("due", a.arg, due_ts=d.clock_ms()),
    "dose_taken": lambda d, a, _p: d.dose_event("taken", a.arg),
    "dose_missed": lambda d, a, _p: d.dose_event("missed", a.arg),
    "stock_low": lambda d, a, _p: d.dispenser_event("stock_low", doses_left=a.value),
    "fault": lambda d, a, _p: d.fault(a.arg),
    "drop": _drop,
    "back": _back,
    "freeze": _freeze,
}


async def _play(
    plan: Scenario,
    actions: Iterable[Action],
    then: Iterable[Action] | None,
    devices: list[SimDevice],
    start: float,
) -> None:
    """Play the timeline, then (after a scripted plan) what comes after it until the run is stopped."""
    await _drive(plan, actions, devices, start)
    if then is not None:
        log.info(
            "%s: the plan is over: every case has been played. The devices go on heartbeating (no more "
            "events) until stopped; stopping them makes each one go offline.",
            plan.name,
        )
        await _drive(plan, then, devices, start)


async def _drive(plan: Scenario, actions: Iterable[Action], devices: list[SimDevice], start: float) -> None:
    loop = asyncio.get_running_loop()
    burst = 0
    for action in actions:
        delay = start + action.at_s - loop.time()
        if delay > 0:
            burst = 0
            await asyncio.sleep(delay)
        else:
            burst += 1
            if burst % 500 == 0:  # running behind: let the network breathe between batches
                await asyncio.sleep(0)
        device = devices[action.device]
        msg_id = _DO[action.what](device, action, plan)
        if action.case or action.what == "alarm":
            line = action_line(plan, action, device.creds, at_s=loop.time() - start, msg_id=msg_id)
            log.info("%s did   %s", plan.name if plan.script else "simulator:", line)


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
