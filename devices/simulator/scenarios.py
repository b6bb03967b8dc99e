"""Named fleet scenarios and their timelines: the pure core of the simulator (no clock, no network).

A scenario is a set of rates. :func:`timeline` turns a scenario, the fleet and a seed into one lazy,
time-ordered stream of :class:`Action` s (seconds from the start of the run); the same inputs always give
the same stream, so a run is repeatable. Per-device behaviour (heartbeats, a dispenser's doses) draws
from that device's own random stream, fleet-wide behaviour (who presses the alarm, whose network drops)
from the fleet's, so adding devices does not change what the first ones do.

Each device also gets a fixed :func:`clock_offset_ms` (clocks slightly off) and may be on a flaky link
(:func:`is_flaky`: it loses some application acks and therefore resends).

A *scripted* scenario (``script`` set, e.g. ``care-day``) is not made of rates: its timeline is a finite
plan written by its own module (``careday.py``), and ``compression`` says how many seconds of the
simulated day pass per second of the run.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Final

__all__ = [
    "SCENARIOS",
    "after_the_plan",
    "Action",
    "Scenario",
    "clock_offset_ms",
    "connect_at_s",
    "describe",
    "is_flaky",
    "rng_for",
    "timeline",
]

# A dispenser lets a dose be taken up to this long after it is due before it reports it missed (the
# window is compressed with the dose interval: a simulated "day" is minutes long).
_DOSE_WINDOW_SHARE: Final = 0.5


@dataclass(frozen=True, slots=True)
class Scenario:
    """How a fleet behaves; every rate is in seconds of the run (time is not compressed otherwise)."""

    name: str
    description: str
    heartbeat_s: float = 30.0
    # Fleet-wide mean time between alarm presses (a Poisson process), None for no alarms.
    alarm_every_s: float | None = 60.0
    first_alarm_after_s: float | None = None  # one press at this time, then the Poisson process
    cancel_share: float = 0.0  # share of alarms the client cancels within the pre-alarm window
    cancel_after_s: tuple[float, float] = (2.0, 10.0)
    # Per dispenser: mean time between scheduled doses, None for no doses.
    dose_every_s: float | None = None
    late_share: float = 0.0  # doses taken late (but within the window)
    forget_share: float = 0.0  # doses never taken: the dispenser reports them missed
    # Fleet-wide mean time between network drops (no DISCONNECT, the Will fires) and freezes (the socket
    # stays open and silent; the broker notices after 1.5 x keep-alive).
    drop_every_s: float | None = None
    drop_for_s: tuple[float, float] = (3.0, 20.0)
    freeze_every_s: float | None = None
    freeze_for_s: tuple[float, float] = (10.0, 60.0)
    flaky_share: float = 0.0  # devices on a link that loses some application acks (so they resend)
    clock_skew_s: float = 0.0  # device clocks are off by up to this much either way
    connect_over_s: float = (
        5.0  # the fleet connects spread over this long (a real fleet does not start at once)
    )
    keepalive_s: int = 30
    # Scripted scenarios: the name of the plan that writes the timeline (the rates above are then unused,
    # except heartbeat_s, connect_over_s and keepalive_s), and how many seconds of the simulated day pass
    # per second of the run (1.0: the rate scenarios are not compressed).
    script: str | None = None
    compression: float = 1.0


SCENARIOS: Final[dict[str, Scenario]] = {
    s.name: s
    for s in (
        Scenario(
            "demo",
            "the `make demo` fleet: heartbeats, one alarm ~5 s after the start, then one now and then; "
            "dispensers report doses taken and sometimes missed",
            alarm_every_s=60.0,
            first_alarm_after_s=5.0,
            dose_every_s=120.0,
            forget_share=0.2,
            connect_over_s=0.5,
        ),
        Scenario(
            "realistic",
            "a day in a home-care region, compressed: late and forgotten doses, alarms (some cancelled), "
            "network drops and freezes, flaky links that resend, clocks a little off",
            alarm_every_s=20.0,
            cancel_share=0.3,
            dose_every_s=300.0,
            late_share=0.25,
            forget_share=0.08,
            drop_every_s=30.0,
            freeze_every_s=90.0,
            flaky_share=0.05,
            clock_skew_s=90.0,
            connect_over_s=20.0,
        ),
        Scenario(
            "heartbeats",
            "heartbeats only, every 30 s (the background load of a quiet fleet)",
            alarm_every_s=None,
            connect_over_s=20.0,
        ),
        Scenario(
            "storm",
            "everything goes wrong at once: frequent drops and freezes, many flaky links, many alarms",
            alarm_every_s=2.0,
            cancel_share=0.3,
            dose_every_s=60.0,
            late_share=0.3,
            forget_share=0.2,
            drop_every_s=1.0,
            drop_for_s=(1.0, 10.0),
            freeze_every_s=5.0,
            freeze_for_s=(5.0, 30.0),
            flaky_share=0.3,
            clock_skew_s=600.0,
            connect_over_s=5.0,
        ),
        Scenario(
            "care-day",
            "one day of a care station (07:00-23:00), compressed 240x into four minutes, with every case "
            "the console must handle: alarms, an offline button, missed and late doses, a msg_id reuse, "
            "a low battery, low stock, a power cut (devices/simulator/careday.py)",
            alarm_every_s=None,
            connect_over_s=1.0,
            script="care-day",
            # 240: one second of the run is four minutes of the day, so the day takes four minutes.
            compression=240.0,
        ),
    )
}


@dataclass(frozen=True, slots=True, order=True)
class Action:
    """Something device ``device`` does at ``at_s`` seconds after the start."""

    at_s: float
    device: int  # index into the fleet
    # heartbeat | alarm | alarm_reused_id | cancel | dose_due | dose_taken | dose_missed | stock_low | fault
    # | drop | back | freeze
    what: str
    arg: str = ""  # alarm kind, dose id, fault
    duration_s: float = 0.0  # drop, freeze: how long
    value: int = 0  # heartbeat: battery percent; stock_low: doses left
    case: str = ""  # scripted scenarios: the case (or cases, comma-separated) this action plays


# What each kind of action is, in words, for the log (a device id and client name go in front).
_SAYS: Final[dict[str, str]] = {
    "heartbeat": "heartbeat, battery {value} %",
    "alarm": "presses the alarm ({arg})",
    "alarm_reused_id": "reboots with its msg_id counter set back to its last alarm's, and raises an alarm "
    "({arg}) under that msg_id",
    "cancel": "cancels its alarm within the pre-alarm window",
    "dose_due": "shows dose {arg} as due",
    "dose_taken": "reports dose {arg} taken",
    "dose_missed": "reports dose {arg} missed (not taken within the grace)",
    "stock_low": "reports stock low: {value} doses left",
    "fault": "reports the fault {arg}",
    "drop": "loses its network for {duration:.0f} s without a DISCONNECT: the broker publishes its Last Will "
    "(offline)",
    "back": "is back: reconnects, publishes online, resends what was not acknowledged",
    "freeze": "hangs for {duration:.0f} s with its connection open",
}


def describe(action: Action) -> str:
    """What ``action`` does, in words."""
    return _SAYS[action.what].format(arg=action.arg, value=action.value, duration=action.duration_s)


def rng_for(seed: int, *parts: object) -> random.Random:
    """A random stream of its own for one purpose of one run (``parts`` name the purpose)."""
    # A string seed is hashed deterministically by random.Random (unlike hash(), which is salted).
    return random.Random(":".join(str(p) for p in (seed, *parts)))


def clock_offset_ms(scenario: Scenario, seed: int, device: int) -> int:
    """How far device ``device``'s clock is off, in milliseconds (fixed for the run)."""
    if scenario.clock_skew_s <= 0:
        return 0
    return round(rng_for(seed, "clock", device).uniform(-scenario.clock_skew_s, scenario.clock_skew_s) * 1000)


def is_flaky(scenario: Scenario, seed: int, device: int) -> bool:
    """True when device ``device`` is on a link that loses application acks."""
    return scenario.flaky_share > 0 and rng_for(seed, "flaky", device).random() < scenario.flaky_share


def _heartbeats(s: Scenario, seed: int, device: int, start_s: float) -> Iterator[Action]:
    rng = rng_for(seed, "hb", device)
    t = start_s + rng.uniform(0.5, 1.0) * min(s.heartbeat_s, 3.0)
    battery = 40 + (device * 37) % 61  # a fleet of batteries between 40 and 100 %, all steady
    while True:
        yield Action(t, device, "heartbeat", value=battery)
        t += s.heartbeat_s * rng.uniform(0.9, 1.1)


def _doses(s: Scenario, seed: int, device: int, start_s: float) -> Iterator[Action]:
    assert s.dose_every_s is not None
    rng = rng_for(seed, "dose", device)
    window = s.dose_every_s * _DOSE_WINDOW_SHARE
    t = start_s + rng.uniform(0.1, 1.0) * s.dose_every_s
    n = 0
    while True:
        n += 1
        dose_id = f"d{device}-{n}"
        yield Action(t, device, "dose_due", dose_id)
        roll = rng.random()
        if roll < s.forget_share:
            yield Action(t + window, device, "dose_missed", dose_id)
        elif roll < s.forget_share + s.late_share:
            yield Action(t + rng.uniform(0.2, 0.95) * window, device, "dose_taken", dose_id)
        else:
            yield Action(t + rng.uniform(0.0, 0.1) * window, device, "dose_taken", dose_id)
        t += s.dose_every_s * rng.uniform(0.8, 1.2) + window  # the next one comes after this one's window


def _alarms(s: Scenario, seed: int, buttons: Sequence[int]) -> Iterator[Action]:
    assert s.alarm_every_s is not None
    rng = rng_for(seed, "alarm")
    pending: list[Action] = []  # cancels scheduled for later
    t = s.first_alarm_after_s if s.first_alarm_after_s is not None else rng.expovariate(1 / s.alarm_every_s)
    n = 0
    while True:
        while pending and pending[0].at_s <= t:
            yield heapq.heappop(pending)
        n += 1
        device = rng.choice(buttons)
        kind = rng.choice(("button", "button", "pendant", "fall"))
        yield Action(t, device, "alarm", kind)
        if rng.random() < s.cancel_share:
            heapq.heappush(pending, Action(t + rng.uniform(*s.cancel_after_s), device, "cancel"))
        t += rng.expovariate(1 / s.alarm_every_s)


def _faults(s: Scenario, seed: int, n_devices: int, what: str) -> Iterator[Action]:
    every = s.drop_every_s if what == "drop" else s.freeze_every_s
    span = s.drop_for_s if what == "drop" else s.freeze_for_s
    assert every is not None
    rng = rng_for(seed, what)
    t = s.connect_over_s + rng.expovariate(1 / every)
    while True:
        yield Action(t, rng.randrange(n_devices), what, duration_s=rng.uniform(*span))
        t += rng.expovariate(1 / every)


def timeline(scenario: Scenario, kinds: Sequence[str], seed: int) -> Iterator[Action]:
    """Every action of the fleet (``kinds[i]`` is device i's kind), in time order, for ever.

    A scripted scenario has a plan of its own (``careday.timeline``); this function is for the rates.
    """
    if scenario.script is not None:
        raise ValueError(f"scenario {scenario.name} is scripted: its timeline comes from its own plan")
    n = len(kinds)
    streams: list[Iterator[Action]] = []
    for i in range(n):
        # Device i comes online at a fixed point of the connect ramp; its first report follows.
        online_s = scenario.connect_over_s * i / n if n else 0.0
        streams.append(_heartbeats(scenario, seed, i, online_s))
        if kinds[i] == "dispenser" and scenario.dose_every_s is not None:
            streams.append(_doses(scenario, seed, i, online_s))
    buttons = [i for i in range(n) if kinds[i] == "alarm_button"]
    if buttons and scenario.alarm_every_s is not None:
        streams.append(_alarms(scenario, seed, buttons))
    if n and scenario.drop_every_s is not None:
        streams.append(_faults(scenario, seed, n, "drop"))
    if n and scenario.freeze_every_s is not None:
        streams.append(_faults(scenario, seed, n, "freeze"))
    return heapq.merge(*streams)


def connect_at_s(scenario: Scenario, device: int, n_devices: int) -> float:
    """When device ``device`` first connects (the fleet ramps up over ``connect_over_s``)."""
    return scenario.connect_over_s * device / n_devices if n_devices else 0.0


def after_the_plan(actions: Sequence[Action], heartbeat_s: float) -> Iterator[Action]:
    """After a scripted plan: every device that heartbeated goes on doing so, as it last did, for ever.

    The console then stays as the plan left it (stopping the devices would make every one go offline).
    """
    last: dict[int, Action] = {}
    for action in actions:
        if action.what == "heartbeat":
            last[action.device] = action

    def beats(beat: Action) -> Iterator[Action]:
        t = beat.at_s
        while True:
            t += heartbeat_s
            yield Action(round(t, 2), beat.device, "heartbeat", value=beat.value)

    return heapq.merge(*(beats(beat) for _, beat in sorted(last.items())))
