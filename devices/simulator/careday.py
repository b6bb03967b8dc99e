"""Scenario ``care-day``: one day of a care station, compressed, with every case the console must handle.

The plan is pure: :func:`timeline` turns the fleet (each device's kind and client), a seed and the
scenario's ``compression`` into a finite, time-ordered list of :class:`~.scenarios.Action` s; the same
inputs give the same day. ``fleet.py`` plays it against a broker and logs a line for every action that
belongs to a case, with the run time and the day's clock, so a person can hold the console next to it.

**Time.** The day runs from 07:00 to 23:00 after a lead-in of :data:`LEAD_S` in which the fleet
connects. ``compression`` seconds of the day pass per second of the run (scenario ``care-day``: 240, so
one second is four minutes and the day takes four minutes; ``carealarm simulate --compress`` changes it).
What the service measures in real seconds is not compressed: heartbeats stay every 30 s, and a few gaps
have a floor in run seconds (the ``*_FLOOR_S`` constants) so the console can show them.

**Cases** (:data:`CASES`); the seed picks which client plays each, among those with the right devices,
and shifts the times a little. Every dispenser follows :data:`DOSE_TIMES` and takes its doses a few
minutes after they are due, except where a case says otherwise; every device heartbeats, video tablets
included.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

from .scenarios import Action, Scenario, rng_for

__all__ = [
    "CASES",
    "DAY_END_S",
    "DAY_START_S",
    "DOSE_TIMES",
    "LEAD_S",
    "Case",
    "day_clock",
    "timeline",
]

DAY_START_S: Final = 7 * 3600
DAY_END_S: Final = 23 * 3600
# Run seconds before 07:00: the fleet connects meanwhile (the scenario's connect_over_s is shorter).
LEAD_S: Final = 3.0
# After the day the devices go on heartbeating this long, so the last events are acknowledged.
TAIL_S: Final = 15.0
# Every dispenser's schedule, local time of the simulated day.
DOSE_TIMES: Final = ("08:00", "13:00", "18:00", "22:00")
# A dispenser reports a dose missed this long after it was due: the service's default grace (45 min,
# care/policy.py), so on a real day the device's word and the service's own timer agree.
GRACE_DAY_S: Final = 45 * 60
# A dispenser warns of low stock from this many doses left on. Four doses a day, so this is less than a
# day's supply: below the service's warning threshold (72 h) whatever schedule it holds for the client.
STOCK_LOW_AT: Final = 3
# The service's default low-battery threshold (care/policy.py battery_low_pct): only used to say in
# the log when the draining battery crosses it.
LOW_BATTERY_PCT: Final = 20

# Gaps the service or the person at the console measure in real seconds get at least this many run
# seconds, however strong the compression:
# the second alarm comes after the first has escalated (60 s, policy alarm_first_escalation_s): a nurse
# has had time to take it;
SECOND_ALARM_FLOOR_S: Final = 60.0
# the button stays away long enough for its client's tablet to heartbeat (every 30 s) twice meanwhile;
OFFLINE_FLOOR_S: Final = 75.0
# a power cut lasts a few monitor polls;
POWER_CUT_FLOOR_S: Final = 30.0
# a dose taken late comes after its "missed" has had time to open an alert;
LATE_AFTER_MISS_FLOOR_S: Final = 5.0
# the alarm under a reused msg_id comes well after the alarm that used it first.
REUSE_FLOOR_S: Final = 30.0


@dataclass(frozen=True, slots=True)
class Case:
    key: str  # what Action.case says
    title: str


CASES: Final = (
    Case("alarm", "an alarm press (button)"),
    Case("second-alarm", "a second alarm of the same client, hours later: a fall"),
    Case(
        "button-offline",
        "an alarm button goes offline (Last Will) while its client's tablet keeps heartbeating; later it "
        "comes back",
    ),
    Case("missed-dose", "a dose never taken: the dispenser reports it missed after the grace"),
    Case("late-dose", "a dose taken late: reported missed after the grace, then taken"),
    Case("two-doses", "two doses of one client: the first stays missed, the second is taken late"),
    Case(
        "msg-id-reset",
        "a button's msg_id counter goes back: a different alarm under an already used msg_id",
    ),
    Case("low-battery", "one device of a client runs low on battery while another of its devices is healthy"),
    Case("stock-low", "a dispenser's stock runs low (stock_low with doses_left)"),
    Case("power", "a dispenser loses mains power (power_lost), then gets it back (power_restored)"),
)


def day_clock(scenario: Scenario, at_s: float) -> str:
    """The simulated day's clock (HH:MM) at ``at_s`` seconds into the run."""
    day_s = int(DAY_START_S + (at_s - LEAD_S) * scenario.compression) % 86_400
    return f"{day_s // 3600:02d}:{day_s % 3600 // 60:02d}"


@dataclass(frozen=True, slots=True)
class _Client:
    name: str
    devices: dict[str, int]  # device kind -> index of the client's first device of that kind


@dataclass(frozen=True, slots=True)
class _Cast:
    """Which client plays which case (and, for low-battery, which of its devices runs low)."""

    alarm: _Client
    offline: _Client
    reset: _Client
    battery: _Client
    low_device: int
    healthy_device: int
    missed: _Client
    late: _Client
    two: _Client
    stock: _Client
    power: _Client


class _Picker:
    """Choose a client for each case, preferring one no other case plays (so the console stays legible)."""

    def __init__(self, clients: list[_Client], rng: random.Random) -> None:
        self.clients, self.rng = clients, rng
        self.used: set[str] = set()  # by any case
        self.used_in_group: dict[str, set[str]] = {}

    def pick(self, need: str, wants: Callable[[_Client], bool], group: str) -> _Client:
        candidates = [c for c in self.clients if wants(c)]
        if not candidates:
            raise ValueError(f"scenario care-day needs {need}; this fleet has none (the demo fleet has all)")
        in_group = self.used_in_group.setdefault(group, set())
        fresh = [c for c in candidates if c.name not in in_group] or candidates
        chosen = self.rng.choice([c for c in fresh if c.name not in self.used] or fresh)
        in_group.add(chosen.name)
        self.used.add(chosen.name)
        return chosen


def _has(*kinds: str) -> Callable[[_Client], bool]:
    return lambda c: all(k in c.devices for k in kinds)


def _cast(clients: list[_Client], rng: random.Random) -> _Cast:
    p = _Picker(clients, rng)
    offline = p.pick("a client with an alarm button and a video tablet", _has("alarm_button", "video"), "b")
    alarm = p.pick("a client with an alarm button", _has("alarm_button"), "b")
    reset = p.pick("a client with an alarm button", _has("alarm_button"), "b")
    battery = p.pick(
        "a client with two devices", lambda c: len(c.devices) >= 2 and "alarm_button" in c.devices, "b"
    )
    # The button runs on batteries; the client's other device (a dispenser or a tablet) on the mains.
    low = battery.devices["alarm_button"]
    healthy = next(i for kind, i in sorted(battery.devices.items()) if kind != "alarm_button")
    dispenser = _has("dispenser")
    missed = p.pick("a client with a dispenser", dispenser, "d")
    late = p.pick("a client with a dispenser", dispenser, "d")
    two = p.pick("a client with a dispenser", dispenser, "d")
    stock = p.pick("a client with a dispenser", dispenser, "d")
    power = p.pick("a client with a dispenser", dispenser, "d")
    return _Cast(alarm, offline, reset, battery, low, healthy, missed, late, two, stock, power)


def _clients(kinds: Sequence[str], clients: Sequence[str]) -> list[_Client]:
    by_name: dict[str, dict[str, int]] = {}
    for i, (kind, client) in enumerate(zip(kinds, clients, strict=True)):
        # A device without a client name (a bench fleet) is a client of its own.
        by_name.setdefault(client or f"#{i}", {}).setdefault(kind, i)
    return [_Client(name, devices) for name, devices in by_name.items()]


def _hhmm(text: str) -> int:
    hour, minute = text.split(":")
    return int(hour) * 3600 + int(minute) * 60


class _Day:
    """The day's clock against the run's, and the actions planned so far."""

    def __init__(self, compression: float) -> None:
        if compression <= 0:
            raise ValueError("compression must be positive")
        self.compression = compression
        self.actions: list[Action] = []

    def at(self, day_s: float) -> float:
        """Run seconds at day time ``day_s`` (seconds since midnight), to a tenth of a second."""
        return round(LEAD_S + (day_s - DAY_START_S) / self.compression, 1)

    def day_s(self, at_s: float) -> float:
        return DAY_START_S + (at_s - LEAD_S) * self.compression

    def later(self, at_s: float, day_span_s: float, floor_s: float) -> float:
        """``day_span_s`` of the day after ``at_s``, but at least ``floor_s`` run seconds after it."""
        return max(self.at(self.day_s(at_s) + day_span_s), round(at_s + floor_s, 1))

    def add(self, *actions: Action) -> None:
        self.actions.extend(actions)


def timeline(
    scenario: Scenario, kinds: Sequence[str], clients: Sequence[str], seed: int, tag: str = "d"
) -> list[Action]:
    """The whole day, in time order: every case, the routine doses, every device's heartbeats.

    ``kinds[i]`` and ``clients[i]`` are device i's registry kind and client name; ``tag`` starts every dose
    id (``{tag}-0800``), so two runs against one service do not report on each other's doses.
    """
    cast = _cast(_clients(kinds, clients), rng_for(seed, "care-day", "cast"))
    rng = rng_for(seed, "care-day", "times")
    day = _Day(scenario.compression)
    outage = _alarms_and_faults(day, cast, rng)
    _doses(day, cast, kinds, rng_for(seed, "care-day", "doses"), tag)
    end = max(day.at(DAY_END_S), max(a.at_s for a in day.actions)) + TAIL_S
    batteries = _batteries(day, cast, kinds, outage, rng_for(seed, "care-day", "battery"))
    day.add(*_heartbeats(scenario, day, cast, kinds, seed, end, batteries))
    return sorted(day.actions)


def _minutes(rng: random.Random, low: float, high: float) -> float:
    return rng.uniform(low, high) * 60


def _alarms_and_faults(day: _Day, cast: _Cast, rng: random.Random) -> tuple[float, float]:
    """The alarm, offline, msg_id and power cases; return the power cut (start, end) in run seconds."""
    button = cast.alarm.devices["alarm_button"]
    first = day.at(_hhmm("09:10") + _minutes(rng, -20, 20))
    second = day.later(first, _minutes(rng, 120, 180), SECOND_ALARM_FLOOR_S)
    day.add(
        Action(first, button, "alarm", "button", case="alarm"),
        Action(second, button, "alarm", "fall", case="second-alarm"),
    )

    button = cast.offline.devices["alarm_button"]
    gone = day.at(_hhmm("11:30") + _minutes(rng, -20, 20))
    back = day.later(gone, _minutes(rng, 60, 90), OFFLINE_FLOOR_S)
    day.add(
        Action(gone, button, "drop", duration_s=round(back - gone, 1), case="button-offline"),
        Action(back, button, "back", case="button-offline"),
    )

    button = cast.reset.devices["alarm_button"]
    used = day.at(_hhmm("10:30") + _minutes(rng, -15, 15))
    reused = max(day.at(_hhmm("15:00") + _minutes(rng, -20, 20)), round(used + REUSE_FLOOR_S, 1))
    day.add(
        Action(used, button, "alarm", "button", case="msg-id-reset"),
        Action(reused, button, "alarm_reused_id", "pendant", case="msg-id-reset"),
    )

    dispenser = cast.power.devices["dispenser"]
    lost = day.at(_hhmm("16:00") + _minutes(rng, -20, 20))
    restored = day.later(lost, _minutes(rng, 40, 60), POWER_CUT_FLOOR_S)
    day.add(
        Action(lost, dispenser, "fault", "power_lost", case="power"),
        Action(restored, dispenser, "fault", "power_restored", case="power"),
    )
    return lost, restored


# What becomes of a dose: taken in time, missed (never taken), or missed and then taken late.
_TAKEN, _MISSED, _LATE = "taken", "missed", "late"


def _doses(day: _Day, cast: _Cast, kinds: Sequence[str], rng: random.Random, tag: str) -> None:
    """Every dispenser's doses of the day, with the dose and stock cases."""
    special: dict[tuple[int, str], tuple[str, tuple[str, ...]]] = {}

    def plan(client: _Client, at: str, outcome: str, case: str) -> None:
        key = (client.devices["dispenser"], at)
        cases = special.get(key, ("", ()))[1]
        special[key] = (outcome, (*cases, case))

    plan(cast.missed, "18:00", _MISSED, "missed-dose")
    plan(cast.late, "13:00", _LATE, "late-dose")
    plan(cast.two, "08:00", _MISSED, "two-doses")
    plan(cast.two, "13:00", _LATE, "two-doses")
    low_stock = cast.stock.devices["dispenser"]
    for device in (i for i, kind in enumerate(kinds) if kind == "dispenser"):
        # The stock case's dispenser starts the day three doses above its warning level.
        stock = len(DOSE_TIMES) - 1 + STOCK_LOW_AT if device == low_stock else rng.randint(20, 40)
        for at in DOSE_TIMES:
            outcome, cases = special.get((device, at), (_TAKEN, ()))
            case = ",".join(cases)
            due_day = _hhmm(at)
            due = day.at(due_day)
            dose_id = f"{tag}-{at.replace(':', '')}"
            day.add(Action(due, device, "dose_due", dose_id, case=case))
            if outcome == _TAKEN:
                day.add(Action(day.at(due_day + _minutes(rng, 1, 12)), device, "dose_taken", dose_id))
            else:
                missed = day.at(due_day + GRACE_DAY_S)
                day.add(Action(missed, device, "dose_missed", dose_id, case=case))
                if outcome == _LATE:
                    taken = max(
                        day.at(due_day + _minutes(rng, 60, 100)), round(missed + LATE_AFTER_MISS_FLOOR_S, 1)
                    )
                    day.add(Action(taken, device, "dose_taken", dose_id, case=case))
            stock -= 1  # dispensed at the due time, taken or not
            if stock <= STOCK_LOW_AT:
                warn = day.at(due_day + 60)
                day.add(Action(warn, device, "stock_low", value=stock, case="stock-low"))


Battery = Callable[[float], int]  # run seconds -> percent


def _batteries(
    day: _Day, cast: _Cast, kinds: Sequence[str], outage: tuple[float, float], rng: random.Random
) -> list[Battery]:
    """Each device's battery over the run: buttons drain slowly, mains devices stay full, two cases."""

    def hours(at_s: float) -> float:
        return max(0.0, day.day_s(at_s) - DAY_START_S) / 3600

    def steady(start: int, per_hour: float) -> Battery:
        return lambda at_s: max(1, start - int(per_hour * hours(at_s)))

    lost, restored = outage

    def on_battery_during_cut(at_s: float) -> int:
        # On the mains the dispenser reports a full battery; cut off it drains, then it charges again.
        if at_s < lost:
            return 100
        dip = 100 - int(8 * (hours(min(at_s, restored)) - hours(lost)))
        return min(100, dip + int(12 * (hours(at_s) - hours(restored)))) if at_s > restored else dip

    out: list[Battery] = []
    for i, kind in enumerate(kinds):
        if i == cast.low_device:
            out.append(steady(LOW_BATTERY_PCT + 3, 1.0))  # low from about 10:00
        elif i == cast.power.devices["dispenser"]:
            out.append(on_battery_during_cut)
        elif kind == "alarm_button":
            out.append(steady(rng.randint(60, 95), 0.3))
        else:
            out.append(steady(100, 0.0))
    return out


def _heartbeats(
    scenario: Scenario,
    day: _Day,
    cast: _Cast,
    kinds: Sequence[str],
    seed: int,
    end: float,
    batteries: list[Battery],
) -> list[Action]:
    """Every device's heartbeats until ``end``; the ones a case points at carry its name."""
    n = len(kinds)
    beats: list[Action] = []
    for i in range(n):
        rng = rng_for(seed, "care-day", "hb", i)
        t = scenario.connect_over_s * i / n + rng.uniform(0.5, 1.0) * min(scenario.heartbeat_s, 3.0)
        while t < end:
            beats.append(Action(round(t, 2), i, "heartbeat", value=batteries[i](t)))
            t += scenario.heartbeat_s * rng.uniform(0.9, 1.1)

    gone, back = next((a.at_s, a.at_s + a.duration_s) for a in day.actions if a.what == "drop")
    tablet = cast.offline.devices["video"]
    low = next((b.at_s for b in beats if b.device == cast.low_device and b.value <= LOW_BATTERY_PCT), end)
    healthy = next((b.at_s for b in beats if b.device == cast.healthy_device and b.at_s > low), end)

    def case_of(beat: Action) -> str:
        if beat.device == tablet and gone < beat.at_s < back:
            return "button-offline"  # the tablet keeps heartbeating while the button is away
        if (beat.device, beat.at_s) in ((cast.low_device, low), (cast.healthy_device, healthy)):
            return "low-battery"  # the first low report, and the other device's next (healthy) one
        return ""

    return [dataclasses.replace(b, case=case_of(b)) if case_of(b) else b for b in beats]
