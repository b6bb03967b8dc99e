"""Is the alarm chain whole? A pure judgement of what the components say of themselves, ``now`` passed in.

Each component beats its ``service_runs`` row every 2 s with its own state (the gateway: its broker link and
store errors); the database itself holds the work that waits (events not yet handled, escalation steps
overdue); the watchdog adds what the end-to-end probe alarm did. :func:`judge` turns that into problems a
nurse can act on — each names what is broken and what it means for the clients — and the console shows
them in a banner, ``/healthz`` answers 503 with them, and the supervisor is paged.

:func:`read_chain` is the database adapter; nothing else here does I/O.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from storage.models import DeviceEvent, EscalationStep, ServiceRun

__all__ = [
    "BACKLOG_MS",
    "STALE_MS",
    "Backlog",
    "ChainHealth",
    "Problem",
    "ProbeView",
    "RunSeen",
    "judge",
    "read_chain",
]

# A component whose last beat is older than this is down: three beats (2 s apart) missed. The goal
# is a banner within 10 s of a failure; the watchdog looks every second.
STALE_MS: Final = 6_000
# Device events waiting this long unhandled mean the monitor is not keeping up (it handles one in ~1 ms and
# is woken at once): an alarm that waits is an alarm nobody sees.
BACKLOG_MS: Final = 5_000
# An escalation step this late did not run: the monitor is stuck or down (steps run within ms of their due).
OVERDUE_MS: Final = 10_000
# A monitor that beats but whose event loop has not done a round for this long is stuck (the loop runs at
# least every poll interval, 1 s by default).
LOOP_STALE_MS: Final = 15_000
# After a central starts, components get this long to show up before their absence is a problem (in a
# deployment where the processes start one by one).
STARTUP_GRACE_MS: Final = 15_000

_WHAT: Final = {
    "central": "the care-station server (central) is not running: consoles show nothing new",
    "gateway": "the gateway is not running: alarms from devices are not taken in",
    "monitor": "the monitor is not running: alarms are stored but not shown and not escalated",
}


@dataclass(frozen=True, slots=True)
class Problem:
    code: str  # gateway_down, monitor_down, broker_unreachable, ... (stable, for tests and metrics)
    text: str  # what a nurse reads on the banner


@dataclass(frozen=True, slots=True)
class RunSeen:
    component: str
    instance: str
    last_beat_ms: int
    state: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Backlog:
    oldest_unhandled_ms: int | None  # when the oldest event not yet handled reached the service
    unhandled: int
    oldest_overdue_step_ms: int | None  # due time of the oldest pending step already due


@dataclass(frozen=True, slots=True)
class ProbeView:
    """What the end-to-end probe alarm did (``interval_ms`` 0: no probe runs here)."""

    interval_ms: int
    late_after_ms: int
    oldest_pending_sent_ms: int | None  # a probe sent and not yet seen on the feed
    send_error: str | None = None


@dataclass(frozen=True, slots=True)
class ChainHealth:
    ok: bool
    problems: tuple[Problem, ...]
    checked_ms: int
    database: bool = True

    def as_json(self) -> dict[str, Any]:
        return {
            "status": "ok" if self.ok else "broken",
            "checked_ms": self.checked_ms,
            "problems": [{"code": p.code, "text": p.text} for p in self.problems],
        }


def judge(
    now_ms: int,
    runs: Iterable[RunSeen],
    backlog: Backlog,
    probe: ProbeView,
    *,
    started_ms: int,
    expect: tuple[str, ...] = ("gateway", "monitor"),
    whole_chain: bool = True,
) -> ChainHealth:
    """Judge the chain at ``now_ms`` (pure); ``expect`` names the components that must be beating.

    ``whole_chain`` False judges only that the expected components beat (the monitor's process watching
    central): the rest is central's to judge, and one problem must page once, from one place.
    """
    live: dict[str, list[RunSeen]] = {}
    for run in runs:
        if now_ms - run.last_beat_ms <= STALE_MS:
            live.setdefault(run.component, []).append(run)
    starting = now_ms - started_ms < STARTUP_GRACE_MS
    problems = [] if starting else _missing(expect, live)
    if whole_chain:
        problems += _stuck_or_cut_off(live, now_ms)
        problems += _work_waiting(backlog, now_ms)
        problems += _probe_problems(probe, now_ms)
    return ChainHealth(ok=not problems, problems=tuple(problems), checked_ms=now_ms)


def _missing(expect: tuple[str, ...], live: dict[str, list[RunSeen]]) -> list[Problem]:
    """The expected components that do not beat."""
    return [
        Problem(f"{component}_down", _WHAT.get(component, f"{component} is not running"))
        for component in expect
        if component not in live
    ]


def _stuck_or_cut_off(live: dict[str, list[RunSeen]], now_ms: int) -> list[Problem]:
    """A monitor that beats but handles nothing; a gateway that cannot reach or listen to the broker."""
    problems: list[Problem] = []
    monitors = live.get("monitor", [])
    if monitors and all(_loop_stale(m, "event handling", now_ms) for m in monitors):
        problems.append(
            Problem("monitor_stuck", "the monitor runs but has stopped handling events: alarms are not shown")
        )
    gateways = live.get("gateway", [])
    if gateways and not any(g.state.get("connected") for g in gateways):
        problems.append(
            Problem(
                "broker_unreachable",
                "the gateway cannot reach the MQTT broker: devices cannot send alarms",
            )
        )
    elif gateways and not any(g.state.get("subscribed") for g in gateways):
        why = next((g.state.get("refused") for g in gateways if g.state.get("refused")), None)
        problems.append(
            Problem(
                "gateway_not_subscribed",
                "the broker does not let the gateway listen to the devices"
                + (f" ({why})" if why else "")
                + ": alarms are not taken in",
            )
        )
    return problems


def _work_waiting(backlog: Backlog, now_ms: int) -> list[Problem]:
    """Device events left unhandled and escalation steps left unrun for too long."""
    problems: list[Problem] = []
    if backlog.oldest_unhandled_ms is not None and now_ms - backlog.oldest_unhandled_ms > BACKLOG_MS:
        waited = (now_ms - backlog.oldest_unhandled_ms) // 1000
        problems.append(
            Problem(
                "events_waiting",
                f"{backlog.unhandled} device event(s) wait unhandled, the oldest for {waited} s: "
                "alarms may not be shown",
            )
        )
    if backlog.oldest_overdue_step_ms is not None and now_ms - backlog.oldest_overdue_step_ms > OVERDUE_MS:
        late = (now_ms - backlog.oldest_overdue_step_ms) // 1000
        problems.append(
            Problem(
                "steps_overdue", f"escalations are {late} s overdue: nobody is paged for unanswered alarms"
            )
        )
    return problems


def _probe_problems(probe: ProbeView, now_ms: int) -> list[Problem]:
    """The end-to-end probe alarm could not be sent, or has not reached the console in time."""
    if probe.interval_ms <= 0:
        return []
    if probe.send_error:
        return [Problem("probe_not_sent", f"the test alarm cannot be sent ({probe.send_error})")]
    sent = probe.oldest_pending_sent_ms
    if sent is None or now_ms - sent <= probe.late_after_ms:
        return []
    at = dt.datetime.fromtimestamp(sent / 1000, dt.UTC).strftime("%H:%M:%S")
    return [
        Problem(
            "probe_late",
            f"the test alarm sent at {at} UTC has not reached the console "
            f"after {(now_ms - sent) // 1000} s: the alarm chain is broken",
        )
    ]


def _loop_stale(run: RunSeen, loop: str, now_ms: int) -> bool:
    """Has this run's named loop gone without a round for too long? (A run that says nothing: no.)"""
    loops = run.state.get("loops_ms")
    if not isinstance(loops, dict) or not isinstance(loops.get(loop), int):
        return False
    return now_ms - int(loops[loop]) > LOOP_STALE_MS


def read_chain(session: Session, now_ms: int) -> tuple[list[RunSeen], Backlog]:
    """The components' recent beats and the work waiting in the database (three small indexed queries)."""
    runs = [
        RunSeen(component, instance, last_beat_ms, _state(state))
        for component, instance, last_beat_ms, state in session.execute(
            select(
                ServiceRun.component, ServiceRun.instance, ServiceRun.last_beat_ms, ServiceRun.state
            ).where(ServiceRun.last_beat_ms > now_ms - 10 * STALE_MS)
        )
    ]
    oldest, count = session.execute(
        select(func.min(DeviceEvent.received_ms), func.count()).where(DeviceEvent.handled_ms.is_(None))
    ).one()
    overdue = session.scalar(
        select(func.min(EscalationStep.due_ms)).where(
            EscalationStep.state == "pending", EscalationStep.due_ms <= now_ms
        )
    )
    return runs, Backlog(oldest, int(count or 0), overdue)


def _state(raw: str | None) -> dict[str, Any]:
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
