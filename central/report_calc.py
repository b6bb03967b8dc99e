"""The pure core of the reports: rows and a time window in, report rows out (no clock, no database).

Every window is half-open, ``[since_ms, until_ms)``, in milliseconds since the epoch (UTC). Days are
calendar days in the time zone handed in, so a night shift's alarms fall on the day they were raised.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from typing import Final

from care.alerts import answer_ms
from care.dose_match import MATCH_WINDOW_MS, report_target, scheduled
from care.lifecycles import DoseState

__all__ = [
    "CLIENT_CANCELLED",
    "DEFINITIONS",
    "MATCH_WINDOW_MS",
    "TARGET_WITHIN_180",
    "TARGET_WITHIN_60",
    "AdherenceRow",
    "AlertTiming",
    "AnswerTimeRow",
    "DeviceHistory",
    "DispenserMissAlert",
    "DispenserReport",
    "DoseRecord",
    "DueInstance",
    "RunSpan",
    "UptimeRow",
    "adherence",
    "answer_times",
    "dispenser_doses",
    "percentile",
    "service_down_periods",
    "uptime",
]

# UK TEC Quality (Telecare Services Association) call-handling targets: 97.5% of alarm calls answered
# within 60 s and 99% within 180 s.
TARGET_WITHIN_60 = 0.975
TARGET_WITHIN_180 = 0.99
_60_S = 60_000
_180_S = 180_000


# -- answer times -------------------------------------------------------------------------------------

# The outcome the monitor gives an alarm the client cancelled on the device inside the pre-alarm window.
CLIENT_CANCELLED = "cancelled_by_client"


@dataclass(frozen=True, slots=True)
class AlertTiming:
    """One alarm: when it opened, when (and by whom) it was acknowledged, and how it ended, if it did."""

    opened_ms: int
    acknowledged_ms: int | None
    nurse: str | None
    resolved_ms: int | None = None
    outcome: str | None = None
    # A person closed it (the monitor closes a client's cancel on the device with nobody as the actor).
    resolved_by_person: bool = False

    @property
    def cancelled_by_client(self) -> bool:
        """Cancelled on the device before anyone answered: no call to answer (a nurse choosing that outcome
        for an alarm nobody acknowledged does not make it one)."""
        return (
            self.outcome == CLIENT_CANCELLED and self.acknowledged_ms is None and not self.resolved_by_person
        )


@dataclass(frozen=True, slots=True)
class AnswerTimeRow:
    """One day, for one nurse or (``nurse`` None) for everyone; shares and times are None without data.

    The shares are of every alarm to be answered, answered or not (see :func:`answer_times`); median and
    p90 are of the answered ones.
    """

    day: str  # YYYY-MM-DD in the report's time zone
    nurse: str | None
    answered: int
    unanswered: int
    cancelled_by_client: int
    within_60: float | None
    within_180: float | None
    median_s: float | None
    p90_s: float | None


def percentile(sorted_values: Sequence[int], share: float) -> int:
    """The nearest-rank percentile of a non-empty ascending sequence (``share`` in (0, 1])."""
    rank = max(1, math.ceil(share * len(sorted_values)))
    return sorted_values[rank - 1]


def answer_times(
    alerts: Iterable[AlertTiming], since_ms: int, until_ms: int, now_ms: int, tz: tzinfo = UTC
) -> list[AnswerTimeRow]:
    """Per day: a row for all nurses, then one per nurse (by name); alarms opened in the window count.

    The share within 60 s (180 s) is: alarms acknowledged within 60 s (180 s) of opening, divided by every
    alarm opened that day except those the client cancelled on the device. An alarm not acknowledged in
    time is a miss — also one never acknowledged, or closed without an acknowledgement. Only an alarm still
    waiting at ``now_ms`` whose 60 s (180 s) have not passed yet is left out of that share: it can still
    make it. Client cancels are counted apart and are in no share. A nurse's row has the alarms that nurse
    acknowledged; unanswered alarms belong to no nurse. A negative answer time (clock skew between
    processes) counts as zero.
    """
    days: dict[str, _Day] = defaultdict(_Day)
    nurses: dict[tuple[str, str], _Day] = defaultdict(_Day)
    for alert in alerts:
        if not since_ms <= alert.opened_ms < until_ms:
            continue
        day = datetime.fromtimestamp(alert.opened_ms / 1000, tz).date().isoformat()
        if alert.cancelled_by_client:
            days[day].cancelled += 1
            continue
        days[day].add(alert, now_ms)
        if alert.acknowledged_ms is not None:
            nurses[(day, alert.nurse or "?")].add(alert, now_ms)
    rows = [_answer_row(day, None, totals) for day, totals in days.items()]
    rows += [_answer_row(day, nurse, totals) for (day, nurse), totals in nurses.items()]
    return sorted(rows, key=lambda r: (r.day, r.nurse is not None, r.nurse or ""))


class _Day:
    """Running counts of one row: answer times, and per target how many alarms count and how many made it."""

    def __init__(self) -> None:
        self.waits: list[int] = []
        self.unanswered = 0
        self.cancelled = 0
        self.counted = {_60_S: 0, _180_S: 0}
        self.made_it = {_60_S: 0, _180_S: 0}

    def add(self, alert: AlertTiming, now_ms: int) -> None:
        wait = None if alert.acknowledged_ms is None else answer_ms(alert.opened_ms, alert.acknowledged_ms)
        if wait is None:
            self.unanswered += 1
        else:
            self.waits.append(wait)
        for target in (_60_S, _180_S):
            if wait is not None and wait <= target:
                self.counted[target] += 1
                self.made_it[target] += 1
            elif wait is not None or alert.resolved_ms is not None or now_ms - alert.opened_ms > target:
                self.counted[target] += 1  # a miss: answered too late, closed unanswered, or waited too long
            # else: still waiting and it may yet be answered in time; not counted until it is decided

    def share(self, target: int) -> float | None:
        return self.made_it[target] / self.counted[target] if self.counted[target] else None


def _answer_row(day: str, nurse: str | None, totals: _Day) -> AnswerTimeRow:
    waits = sorted(totals.waits)
    return AnswerTimeRow(
        day=day,
        nurse=nurse,
        answered=len(waits),
        unanswered=totals.unanswered,
        cancelled_by_client=totals.cancelled,
        within_60=totals.share(_60_S),
        within_180=totals.share(_180_S),
        median_s=statistics.median(waits) / 1000 if waits else None,
        p90_s=percentile(waits, 0.9) / 1000 if waits else None,
    )


# -- medication adherence -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DoseRecord:
    client_id: int
    due_ms: int
    state: str  # pending | taken | taken_late | missed | cancelled
    scheduled: bool = True  # False: known only from the dispenser (the schedule has no instance of it)


@dataclass(frozen=True, slots=True)
class DueInstance:
    """A dose instance of the schedule, in any state: what a dispenser's report may be about."""

    client_id: int
    dose_id: str
    due_ms: int


@dataclass(frozen=True, slots=True)
class DispenserReport:
    """A dispenser's ``dose`` event: the dose was shown as due, taken, or not taken."""

    client_id: int
    dose_id: str
    event: str  # due | taken | missed
    at_ms: int  # when the service received it (the time the monitor judged it by)
    due_ms: int | None = None  # the due time the dispenser gave, if it did


@dataclass(frozen=True, slots=True)
class DispenserMissAlert:
    """A missed-dose alert the monitor opened on a dispenser's word (subject ``device-dose:<dose id>``)."""

    client_id: int
    dose_id: str
    opened_ms: int
    taken_late: bool  # resolved because the dose was taken after all


@dataclass(frozen=True, slots=True)
class AdherenceRow:
    """``due`` = taken + taken_late + missed + pending; adherence is over the decided doses only."""

    client_id: int
    due: int
    taken: int
    taken_late: int
    missed: int
    pending: int
    unscheduled: int  # of ``due``, the doses known only from the dispenser
    adherence: float | None  # (taken + taken_late) / (taken + taken_late + missed)
    on_time: float | None  # taken / (taken + taken_late + missed)


def adherence(doses: Iterable[DoseRecord], since_ms: int, until_ms: int) -> list[AdherenceRow]:
    """Per client (by id), the doses due in the window and how they went.

    A dose removed from the schedule before it was due (``cancelled``) is neither due nor missed.
    """
    counts: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for dose in doses:
        if not since_ms <= dose.due_ms < until_ms or dose.state == DoseState.CANCELLED:
            continue
        # An unknown state is not a taken dose: it counts as still open rather than vanishing.
        state = dose.state if dose.state in ("taken", "taken_late", "missed") else "pending"
        counts[dose.client_id][state] += 1
        counts[dose.client_id]["unscheduled"] += not dose.scheduled
    rows = []
    for client_id in sorted(counts):
        c = counts[client_id]
        decided = c["taken"] + c["taken_late"] + c["missed"]
        rows.append(
            AdherenceRow(
                client_id=client_id,
                due=decided + c["pending"],
                taken=c["taken"],
                taken_late=c["taken_late"],
                missed=c["missed"],
                pending=c["pending"],
                unscheduled=c["unscheduled"],
                adherence=(c["taken"] + c["taken_late"]) / decided if decided else None,
                on_time=c["taken"] / decided if decided else None,
            )
        )
    return rows


def dispenser_doses(
    reports: Iterable[DispenserReport],
    alerts: Iterable[DispenserMissAlert],
    instances: Iterable[DueInstance],
) -> list[DoseRecord]:
    """The doses known only from the dispenser, one record each (``scheduled`` False).

    A report is left out when the schedule has an instance it is about (the monitor's rule,
    ``care.dose_match``): the monitor applied it to that instance. Of the rest, each dose is found by its
    due time, or without one by the latest dose of that id recorded within :data:`MATCH_WINDOW_MS` before
    the report. A ``missed`` report of a new dose is a missed dose, due at the due time it gave (else when
    it arrived); a ``taken`` report turns a missed dose into taken late, and of a new dose is a dose taken
    on time. Any other repeat adds nothing; a ``due`` report decides nothing. A missed-dose alert the
    monitor opened on a dispenser's word counts only when no missed report is at hand within that window
    of it (the report is the better witness: an alert counts repeats on itself and is held back in a
    maintenance window).
    """
    schedule: dict[tuple[int, str], list[int]] = defaultdict(list)
    for instance in instances:
        schedule[(instance.client_id, instance.dose_id)].append(instance.due_ms)
    doses: dict[tuple[int, str], list[_Reported]] = defaultdict(list)  # in order of arrival
    for report in sorted(reports, key=lambda r: r.at_ms):
        target = report_target(report.due_ms, report.at_ms)
        key = (report.client_id, report.dose_id)
        if report.event not in ("taken", "missed") or scheduled(schedule[key], target):
            continue
        if report.due_ms is not None:
            same = next((d for d in doses[key] if d.due_ms == report.due_ms), None)
        else:
            near = report.at_ms - MATCH_WINDOW_MS
            same = next((d for d in reversed(doses[key]) if near < d.due_ms <= report.at_ms), None)
        if same is None:
            missed = report.event == "missed"
            doses[key].append(_Reported(target, report.event, report.at_ms if missed else None))
        elif report.event == "taken" and same.state == DoseState.MISSED:
            same.state = DoseState.TAKEN_LATE
    records = [
        DoseRecord(client_id, dose.due_ms, dose.state, scheduled=False)
        for (client_id, _), found in doses.items()
        for dose in found
    ]
    for alert in alerts:
        key = (alert.client_id, alert.dose_id)
        if scheduled(schedule[key], alert.opened_ms):
            continue
        witnessed = any(
            dose.missed_at is not None and abs(dose.missed_at - alert.opened_ms) < MATCH_WINDOW_MS
            for dose in doses[key]
        )
        if not witnessed:
            state = DoseState.TAKEN_LATE if alert.taken_late else DoseState.MISSED
            records.append(DoseRecord(alert.client_id, alert.opened_ms, state, scheduled=False))
    return records


@dataclass(slots=True)
class _Reported:
    """A dose as the dispenser's reports tell it so far (a later ``taken`` may turn missed into late)."""

    due_ms: int
    state: str  # missed | taken | taken_late
    missed_at: int | None  # when the missed report arrived (what a missed-dose alert was opened at)


# -- device uptime ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeviceHistory:
    """A device's known online/offline transitions (status events) and its current state."""

    device_id: str
    created_ms: int
    transitions: tuple[tuple[int, bool], ...]  # (at_ms, online), any order
    online: bool | None = None
    online_changed_ms: int | None = None


@dataclass(frozen=True, slots=True)
class RunSpan:
    """One run of the gateway: from its start to its last heartbeat."""

    started_ms: int
    last_beat_ms: int


@dataclass(frozen=True, slots=True)
class UptimeRow:
    """``online_ms + offline_ms + unknown_ms + service_down_ms`` is the part of the window the device
    existed (until now)."""

    device_id: str
    online_ms: int
    offline_ms: int
    unknown_ms: int
    service_down_ms: int  # the service itself was down: the device's state is not known
    share_online: float | None  # online / (online + offline): time with no report is not counted
    changes: int  # transitions inside the window


def service_down_periods(runs: Iterable[RunSpan], grace_ms: int, now_ms: int) -> list[tuple[int, int]]:
    """The periods ``[start, end)`` the service was down, in order and apart, from its runs.

    A gap between the end of the runs so far (the latest last beat) and the next start longer than
    ``grace_ms`` is down from that last beat; so is the time after the last run until ``now_ms``. Before
    the first run nothing is known (the runs were not recorded then), so nothing is counted down.
    """
    down: list[tuple[int, int]] = []
    covered_until: int | None = None
    for run in sorted(runs, key=lambda r: r.started_ms):
        if covered_until is not None and run.started_ms - covered_until > grace_ms:
            down.append((covered_until, run.started_ms))
        covered_until = run.last_beat_ms if covered_until is None else max(covered_until, run.last_beat_ms)
    if covered_until is not None and now_ms - covered_until > grace_ms:
        down.append((covered_until, now_ms))
    return down


def uptime(
    devices: Iterable[DeviceHistory],
    since_ms: int,
    until_ms: int,
    now_ms: int,
    service_down: Sequence[tuple[int, int]] = (),
) -> list[UptimeRow]:
    """Per device (by id): time online, offline, unknown and service-down in the window, cut at ``now_ms``.

    ``service_down`` are the periods (in order, apart) when the service itself was down: that time is not
    the device's, and counts neither as online, offline nor unreported.
    """
    return sorted(
        (_uptime_one(d, since_ms, until_ms, now_ms, service_down) for d in devices), key=lambda r: r.device_id
    )


def _uptime_one(
    device: DeviceHistory, since_ms: int, until_ms: int, now_ms: int, down: Sequence[tuple[int, int]]
) -> UptimeRow:
    start = max(since_ms, device.created_ms)
    end = min(until_ms, now_ms)
    points = list(device.transitions)
    if device.online is not None and device.online_changed_ms is not None:
        points.append((device.online_changed_ms, device.online))
    # Stable sort: at equal times the current state (appended last) wins over a stored event.
    points.sort(key=lambda p: p[0])
    totals = {True: 0, False: 0, None: 0}
    if end <= start:
        return UptimeRow(device.device_id, 0, 0, 0, 0, None, 0)
    state: bool | None = None  # before the first report the state is unknown
    cursor, changes, down_ms = start, 0, 0

    def count(until: int) -> None:
        nonlocal down_ms
        lost = _overlap(down, cursor, until)
        totals[state] += until - cursor - lost
        down_ms += lost

    for at_ms, online in points:
        if at_ms <= start:
            state = online
            continue
        if at_ms >= end:
            break
        count(at_ms)
        cursor = at_ms
        if online != state:
            changes += 1
        state = online
    count(end)
    known = totals[True] + totals[False]
    return UptimeRow(
        device_id=device.device_id,
        online_ms=totals[True],
        offline_ms=totals[False],
        unknown_ms=totals[None],
        service_down_ms=down_ms,
        share_online=totals[True] / known if known else None,
        changes=changes,
    )


def _overlap(periods: Sequence[tuple[int, int]], start: int, end: int) -> int:
    """How much of ``[start, end)`` the periods (apart from each other) cover."""
    return sum(max(0, min(b, end) - max(a, start)) for a, b in periods)


# -- definitions --------------------------------------------------------------------------------------

# What each figure means, in words, shown next to it on the reports page (which translates them: the
# English text is the translation key, see central/static/i18n.js) and in docs/reports.md.
DEFINITIONS: Final[dict[str, dict[str, str]]] = {
    "answer_times": {
        "nurse": "A nurse's row counts the alarms that nurse acknowledged. Unanswered alarms belong to no "
        "nurse: they are on the day's row only.",
        "answered": "Alarms a nurse acknowledged.",
        "unanswered": "Alarms nobody acknowledged: still waiting, or closed without being acknowledged.",
        "cancelled_by_client": "Alarms the client cancelled on the device within the pre-alarm window, "
        "before anyone answered. They are no call to answer and are left out of every other figure.",
        "within_60": "Alarms acknowledged within 60 s of arriving, out of all alarms except those "
        "cancelled by the client. An alarm not acknowledged within 60 s counts as a miss, also when it was "
        "never acknowledged or was closed without it; one waiting for less than 60 s is not counted yet.",
        "within_180": "The same for 180 s: acknowledged within 180 s, out of all alarms except those "
        "cancelled by the client.",
        "median_s": "Half of the answered alarms were acknowledged within this time.",
        "p90_s": "90 % of the answered alarms were acknowledged within this time.",
    },
    "adherence": {
        "due": "Doses due in the period: the scheduled ones and the ones only the dispenser reported. A "
        "dose removed from the schedule before it was due is not counted.",
        "taken": "Taken within the grace period after the due time.",
        "taken_late": "Taken after the grace period, having been counted as missed first.",
        "missed": "Not taken by the end of the grace period, or reported missed by the dispenser, and not "
        "taken since.",
        "pending": "Due, but the grace period has not ended yet: not judged.",
        "unscheduled": "Of the due doses, those the schedule does not have: known only from the "
        "dispenser's reports or its missed-dose alerts.",
        "adherence": "(Taken + taken late) ÷ (taken + taken late + missed). Pending doses are left out.",
        "on_time": "Taken ÷ (taken + taken late + missed).",
    },
    "uptime": {
        "share_online": "Time online ÷ (time online + time offline). Time without a report and time the "
        "service itself was down are left out.",
        "online_ms": "Time the device was connected, from its status reports and its current state.",
        "offline_ms": "Time the device was disconnected (its connection dropped or it signed off).",
        "unknown_ms": "Time from when the device was added until its first status report.",
        "service_down_ms": "Time the service itself was down (no gateway running, or none heard from for "
        "more than two heartbeat intervals). The device's state is not known then: it counts neither for "
        "nor against the device.",
        "changes": "How often the device went online or offline in the period.",
    },
}
