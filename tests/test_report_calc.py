"""The pure report calculations: answer times, medication adherence and device uptime."""

from __future__ import annotations

from zoneinfo import ZoneInfo

from hypothesis import given
from hypothesis import strategies as st

from central.report_calc import (
    AlertTiming,
    DeviceHistory,
    DoseRecord,
    adherence,
    answer_times,
    percentile,
    uptime,
)

DAY = 86_400_000
T0 = 1_800_000_000_000 - (1_800_000_000_000 % DAY)  # a UTC midnight
S = 1000


def test_answer_times_per_day_and_nurse() -> None:
    """Each day gets an all-nurses row, then a row per nurse, with shares, median and p90."""
    alerts = [
        AlertTiming(T0 + 10 * S, T0 + 40 * S, "Anna"),  # 30 s
        AlertTiming(T0 + 20 * S, T0 + 110 * S, "Anna"),  # 90 s
        AlertTiming(T0 + 30 * S, T0 + 230 * S, "Bert"),  # 200 s
        AlertTiming(T0 + DAY, T0 + DAY + 5 * S, "Bert"),  # next day, 5 s
    ]
    rows = answer_times(alerts, T0, T0 + 2 * DAY)
    assert [(r.day, r.nurse, r.answered) for r in rows] == [
        ("2027-01-15", None, 3),
        ("2027-01-15", "Anna", 2),
        ("2027-01-15", "Bert", 1),
        ("2027-01-16", None, 1),
        ("2027-01-16", "Bert", 1),
    ]
    day = rows[0]
    assert (day.within_60, day.within_180, day.median_s, day.p90_s) == (1 / 3, 2 / 3, 90.0, 200.0)


def test_unanswered_alarms_count_on_the_day_but_not_in_the_times() -> None:
    """An alarm never acknowledged is counted as unanswered; a day with only those has no shares."""
    rows = answer_times([AlertTiming(T0 + S, None, None)], T0, T0 + DAY)
    assert [(r.nurse, r.answered, r.unanswered, r.within_60, r.median_s) for r in rows] == [
        (None, 0, 1, None, None)
    ]


def test_answer_times_group_days_in_the_time_zone() -> None:
    """An alarm at 23:30 UTC falls on the next day in Amsterdam."""
    late = T0 + 23 * 3_600_000 + 30 * 60_000
    [utc, _] = answer_times([AlertTiming(late, late + S, "Anna")], T0, T0 + 2 * DAY)
    [ams, _] = answer_times(
        [AlertTiming(late, late + S, "Anna")], T0, T0 + 2 * DAY, ZoneInfo("Europe/Amsterdam")
    )
    assert (utc.day, ams.day) == ("2027-01-15", "2027-01-16")


def test_alarms_outside_the_window_are_left_out() -> None:
    """The window is half-open: an alarm opened exactly at ``until`` is not in it."""
    assert answer_times([AlertTiming(T0 + DAY, T0 + DAY + S, "A")], T0, T0 + DAY) == []


def test_percentile_is_nearest_rank() -> None:
    """p90 of 1..10 is 9, of one value that value."""
    assert (percentile(list(range(1, 11)), 0.9), percentile([7], 0.9)) == (9, 7)


def test_adherence_counts_and_share() -> None:
    """Taken late counts as taken for adherence but not on time; pending doses are not judged yet."""
    doses = [
        DoseRecord(1, T0, "taken"),
        DoseRecord(1, T0 + 1, "taken_late"),
        DoseRecord(1, T0 + 2, "missed"),
        DoseRecord(1, T0 + 3, "missed"),
        DoseRecord(1, T0 + 4, "pending"),
        DoseRecord(2, T0 - 1, "missed"),  # before the window
    ]
    [row] = adherence(doses, T0, T0 + DAY)
    assert (row.client_id, row.due, row.taken, row.taken_late, row.missed, row.pending) == (1, 5, 1, 1, 2, 1)
    assert (row.adherence, row.on_time) == (0.5, 0.25)


def test_uptime_from_transitions_and_current_state() -> None:
    """Online from the last report before the window, offline for an hour in it, online again now."""
    device = DeviceHistory(
        "d1",
        created_ms=T0 - DAY,
        transitions=((T0 - 5, True), (T0 + 3_600_000, False)),
        online=True,
        online_changed_ms=T0 + 7_200_000,
    )
    [row] = uptime([device], T0, T0 + DAY, now_ms=T0 + 10 * 3_600_000)
    assert (row.online_ms, row.offline_ms, row.unknown_ms, row.changes) == (9 * 3_600_000, 3_600_000, 0, 2)
    assert row.share_online == 0.9


def test_uptime_before_any_report_is_unknown() -> None:
    """A device that never reported has no share; the time since it was created counts as unknown."""
    [row] = uptime([DeviceHistory("d1", created_ms=T0 + DAY // 2, transitions=())], T0, T0 + DAY, T0 + DAY)
    assert (row.online_ms, row.offline_ms, row.unknown_ms, row.share_online) == (0, 0, DAY // 2, None)


def test_uptime_window_in_the_future_is_empty() -> None:
    """Nothing is counted after now."""
    [row] = uptime([DeviceHistory("d1", T0, ((T0, True),))], T0 + DAY, T0 + 2 * DAY, now_ms=T0 + DAY)
    assert (row.online_ms + row.offline_ms + row.unknown_ms, row.share_online) == (0, None)


# -- properties ---------------------------------------------------------------------------------------

_times = st.integers(min_value=T0, max_value=T0 + 3 * DAY)
_alerts = st.lists(
    st.builds(
        AlertTiming,
        _times,
        st.one_of(st.none(), st.integers(min_value=T0 - 10 * S, max_value=T0 + 4 * DAY)),
        st.sampled_from(["Anna", "Bert", None]),
    ),
    max_size=40,
)


@given(_alerts, _times, st.integers(min_value=1, max_value=3 * DAY))
def test_answer_shares_are_between_zero_and_one_and_counts_add_up(
    alerts: list[AlertTiming], since: int, length: int
) -> None:
    """Shares lie in [0, 1], within 60 s <= within 180 s, median <= p90; nurses add up to the day."""
    rows = answer_times(alerts, since, since + length)
    in_window = [a for a in alerts if since <= a.opened_ms < since + length]
    days = [r for r in rows if r.nurse is None]
    assert sum(r.answered + r.unanswered for r in days) == len(in_window)
    for day in days:
        assert sum(r.answered for r in rows if r.day == day.day and r.nurse is not None) == day.answered
    for r in rows:
        if r.answered:
            assert r.within_60 is not None and r.within_180 is not None
            assert 0 <= r.within_60 <= r.within_180 <= 1
            assert r.median_s is not None and r.p90_s is not None and 0 <= r.median_s <= r.p90_s


_doses = st.lists(
    st.builds(
        DoseRecord,
        st.integers(min_value=1, max_value=4),
        _times,
        st.sampled_from(["pending", "taken", "taken_late", "missed", "weird"]),
    ),
    max_size=60,
)


@given(_doses, _times, st.integers(min_value=1, max_value=3 * DAY))
def test_adherence_counts_add_up_and_shares_are_bounded(
    doses: list[DoseRecord], since: int, length: int
) -> None:
    """due = taken + late + missed + pending, totals match the window, shares lie in [0, 1]."""
    rows = adherence(doses, since, since + length)
    assert sum(r.due for r in rows) == sum(since <= d.due_ms < since + length for d in doses)
    for r in rows:
        assert r.due == r.taken + r.taken_late + r.missed + r.pending
        if r.adherence is not None:
            assert r.on_time is not None and 0 <= r.on_time <= r.adherence <= 1


_histories = st.builds(
    DeviceHistory,
    st.just("d"),
    _times,
    st.lists(st.tuples(_times, st.booleans()), max_size=12).map(tuple),
    st.one_of(st.none(), st.booleans()),
    st.one_of(st.none(), _times),
)


@given(_histories, _times, st.integers(min_value=1, max_value=3 * DAY), _times)
def test_uptime_parts_add_up_to_the_covered_time(
    device: DeviceHistory, since: int, length: int, now: int
) -> None:
    """online + offline + unknown is the part of the window after creation and before now; share in [0, 1]."""
    [row] = uptime([device], since, since + length, now)
    covered = max(0, min(since + length, now) - max(since, device.created_ms))
    assert row.online_ms + row.offline_ms + row.unknown_ms == covered
    assert min(row.online_ms, row.offline_ms, row.unknown_ms) >= 0
    if row.share_online is not None:
        assert 0 <= row.share_online <= 1
