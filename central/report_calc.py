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

__all__ = [
    "TARGET_WITHIN_180",
    "TARGET_WITHIN_60",
    "AdherenceRow",
    "AlertTiming",
    "AnswerTimeRow",
    "DeviceHistory",
    "DoseRecord",
    "UptimeRow",
    "adherence",
    "answer_times",
    "percentile",
    "uptime",
]

# UK TEC Quality (Telecare Services Association) call-handling targets: 97.5% of alarm calls answered
# within 60 s and 99% within 180 s.
TARGET_WITHIN_60 = 0.975
TARGET_WITHIN_180 = 0.99
_60_S = 60_000
_180_S = 180_000


# -- answer times -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AlertTiming:
    """One alarm: when it opened, when (and by whom) it was acknowledged, if it was."""

    opened_ms: int
    acknowledged_ms: int | None
    nurse: str | None


@dataclass(frozen=True, slots=True)
class AnswerTimeRow:
    """One day, for one nurse or (``nurse`` None) for everyone; shares and times are None without data."""

    day: str  # YYYY-MM-DD in the report's time zone
    nurse: str | None
    answered: int
    unanswered: int
    within_60: float | None
    within_180: float | None
    median_s: float | None
    p90_s: float | None


def percentile(sorted_values: Sequence[int], share: float) -> int:
    """The nearest-rank percentile of a non-empty ascending sequence (``share`` in (0, 1])."""
    rank = max(1, math.ceil(share * len(sorted_values)))
    return sorted_values[rank - 1]


def answer_times(
    alerts: Iterable[AlertTiming], since_ms: int, until_ms: int, tz: tzinfo = UTC
) -> list[AnswerTimeRow]:
    """Per day: a row for all nurses, then one per nurse (by name); alarms opened in the window count.

    An alarm not (yet) acknowledged counts as unanswered on the all-nurses row; shares and times are over
    answered alarms (a negative answer time, from clock skew between processes, counts as zero).
    """
    waits: dict[tuple[str, str | None], list[int]] = defaultdict(list)
    unanswered: dict[str, int] = defaultdict(int)
    for alert in alerts:
        if not since_ms <= alert.opened_ms < until_ms:
            continue
        day = _day(alert.opened_ms, tz)
        if alert.acknowledged_ms is None:
            unanswered[day] += 1
            waits.setdefault((day, None), [])
            continue
        wait = max(0, alert.acknowledged_ms - alert.opened_ms)
        waits[(day, None)].append(wait)
        waits[(day, alert.nurse or "?")].append(wait)
    rows = [
        _answer_row(day, nurse, sorted(w), unanswered[day] if nurse is None else 0)
        for (day, nurse), w in waits.items()
    ]
    return sorted(rows, key=lambda r: (r.day, r.nurse is not None, r.nurse or ""))


def _answer_row(day: str, nurse: str | None, waits: list[int], unanswered: int) -> AnswerTimeRow:
    if not waits:
        return AnswerTimeRow(day, nurse, 0, unanswered, None, None, None, None)
    n = len(waits)
    return AnswerTimeRow(
        day=day,
        nurse=nurse,
        answered=n,
        unanswered=unanswered,
        within_60=sum(w <= _60_S for w in waits) / n,
        within_180=sum(w <= _180_S for w in waits) / n,
        median_s=statistics.median(waits) / 1000,
        p90_s=percentile(waits, 0.9) / 1000,
    )


def _day(ms: int, tz: tzinfo) -> str:
    return datetime.fromtimestamp(ms / 1000, tz).date().isoformat()


# -- medication adherence -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DoseRecord:
    client_id: int
    due_ms: int
    state: str  # pending | taken | taken_late | missed


@dataclass(frozen=True, slots=True)
class AdherenceRow:
    """``due`` = taken + taken_late + missed + pending; adherence is over the decided doses only."""

    client_id: int
    due: int
    taken: int
    taken_late: int
    missed: int
    pending: int
    adherence: float | None  # (taken + taken_late) / (taken + taken_late + missed)
    on_time: float | None  # taken / (taken + taken_late + missed)


def adherence(doses: Iterable[DoseRecord], since_ms: int, until_ms: int) -> list[AdherenceRow]:
    """Per client (by id), the doses due in the window and how they went."""
    counts: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for dose in doses:
        if since_ms <= dose.due_ms < until_ms:
            # An unknown state is not a taken dose: it counts as still open rather than vanishing.
            state = dose.state if dose.state in ("taken", "taken_late", "missed") else "pending"
            counts[dose.client_id][state] += 1
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
                adherence=(c["taken"] + c["taken_late"]) / decided if decided else None,
                on_time=c["taken"] / decided if decided else None,
            )
        )
    return rows


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
class UptimeRow:
    """``online_ms + offline_ms + unknown_ms`` is the part of the window the device existed (until now)."""

    device_id: str
    online_ms: int
    offline_ms: int
    unknown_ms: int
    share_online: float | None  # online / (online + offline): time with no report is not counted
    changes: int  # transitions inside the window


def uptime(devices: Iterable[DeviceHistory], since_ms: int, until_ms: int, now_ms: int) -> list[UptimeRow]:
    """Per device (by id): time online, offline and unknown in the window, cut at ``now_ms``."""
    return sorted((_uptime_one(d, since_ms, until_ms, now_ms) for d in devices), key=lambda r: r.device_id)


def _uptime_one(device: DeviceHistory, since_ms: int, until_ms: int, now_ms: int) -> UptimeRow:
    start = max(since_ms, device.created_ms)
    end = min(until_ms, now_ms)
    points = list(device.transitions)
    if device.online is not None and device.online_changed_ms is not None:
        points.append((device.online_changed_ms, device.online))
    # Stable sort: at equal times the current state (appended last) wins over a stored event.
    points.sort(key=lambda p: p[0])
    totals = {True: 0, False: 0, None: 0}
    if end <= start:
        return UptimeRow(device.device_id, 0, 0, 0, None, 0)
    state: bool | None = None  # before the first report the state is unknown
    cursor = start
    changes = 0
    for at_ms, online in points:
        if at_ms <= start:
            state = online
            continue
        if at_ms >= end:
            break
        totals[state] += at_ms - cursor
        cursor = at_ms
        if online != state:
            changes += 1
        state = online
    totals[state] += end - cursor
    known = totals[True] + totals[False]
    return UptimeRow(
        device_id=device.device_id,
        online_ms=totals[True],
        offline_ms=totals[False],
        unknown_ms=totals[None],
        share_online=totals[True] / known if known else None,
        changes=changes,
    )
