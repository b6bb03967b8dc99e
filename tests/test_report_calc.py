"""The pure report calculations: answer times, medication adherence and device uptime."""

from __future__ import annotations

from zoneinfo import ZoneInfo

from hypothesis import given
from hypothesis import strategies as st

from care import dose_match as monitor_doses
from central.report_calc import (
    MATCH_WINDOW_MS,
    AlertTiming,
    DeviceHistory,
    DispenserMissAlert,
    DispenserReport,
    DoseRecord,
    DueInstance,
    RunSpan,
    adherence,
    answer_times,
    dispenser_doses,
    percentile,
    service_down_periods,
    uptime,
)

DAY = 86_400_000
T0 = 1_800_000_000_000 - (1_800_000_000_000 % DAY)  # a UTC midnight
S = 1000
HOUR = 3_600_000
LATER = T0 + 10 * DAY  # a "now" long after every alarm of these tests


def test_answer_times_per_day_and_nurse() -> None:
    """Each day gets an all-nurses row, then a row per nurse, with shares, median and p90."""
    alerts = [
        AlertTiming(T0 + 10 * S, T0 + 40 * S, "Anna"),  # 30 s
        AlertTiming(T0 + 20 * S, T0 + 110 * S, "Anna"),  # 90 s
        AlertTiming(T0 + 30 * S, T0 + 230 * S, "Bert"),  # 200 s
        AlertTiming(T0 + DAY, T0 + DAY + 5 * S, "Bert"),  # next day, 5 s
    ]
    rows = answer_times(alerts, T0, T0 + 2 * DAY, LATER)
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
    """An alarm never acknowledged is unanswered: a miss in the shares, absent from median and p90."""
    rows = answer_times([AlertTiming(T0 + S, None, None)], T0, T0 + DAY, LATER)
    assert [(r.nurse, r.answered, r.unanswered, r.within_60, r.within_180, r.median_s) for r in rows] == [
        (None, 0, 1, 0.0, 0.0, None)
    ]


def test_alarms_never_acknowledged_count_as_misses_in_the_shares() -> None:
    """One alarm answered in 30 s and four that waited over 3 minutes unacknowledged: 20 %, not 100 %."""
    alerts = [
        AlertTiming(T0, T0 + 30 * S, "Anna"),
        AlertTiming(T0 + HOUR, None, None),  # still open
        AlertTiming(T0 + 2 * HOUR, None, None),  # still open
        # Resolved by a nurse straight from the queue, never acknowledged.
        AlertTiming(T0 + 3 * HOUR, None, None, resolved_ms=T0 + 3 * HOUR + 400 * S, outcome="other"),
        AlertTiming(
            T0 + 4 * HOUR, None, None, resolved_ms=T0 + 4 * HOUR + 5 * S, outcome="false_alarm"
        ),  # resolved within 60 s, but nobody answered it
    ]
    [day, anna] = answer_times(alerts, T0, T0 + DAY, LATER)
    assert (day.answered, day.unanswered, day.within_60, day.within_180) == (1, 4, 0.2, 0.2)
    assert (day.median_s, day.p90_s) == (30.0, 30.0)  # answer times are of answered alarms
    assert (anna.nurse, anna.answered, anna.within_60) == ("Anna", 1, 1.0)


def test_a_waiting_alarm_counts_only_once_its_target_has_passed() -> None:
    """At now, an alarm waiting 30 s is in no share yet; one waiting 100 s misses 60 s but not yet 180 s."""
    now = T0 + HOUR
    alerts = [
        AlertTiming(T0, T0 + 20 * S, "Anna"),
        AlertTiming(now - 30 * S, None, None),
        AlertTiming(now - 100 * S, None, None),
    ]
    [day, _] = answer_times(alerts, T0, T0 + DAY, now)
    assert (day.answered, day.unanswered, day.within_60, day.within_180) == (1, 2, 0.5, 1.0)


def test_alarms_cancelled_by_the_client_are_counted_apart() -> None:
    """A client's cancel inside the pre-alarm window is no call: its own count, out of the shares."""
    cancelled = AlertTiming(
        T0 + HOUR, None, None, resolved_ms=T0 + HOUR + 12 * S, outcome="cancelled_by_client"
    )
    alerts = [cancelled, cancelled, AlertTiming(T0, T0 + 200 * S, "Anna")]
    [day, _] = answer_times(alerts, T0, T0 + DAY, LATER)
    assert (day.answered, day.unanswered, day.cancelled_by_client) == (1, 0, 2)
    assert (day.within_60, day.within_180) == (0.0, 0.0)


def test_an_unanswered_alarm_a_nurse_closed_as_cancelled_is_still_a_miss() -> None:
    """Only the device's cancel (no person resolved it) is the client's: a nurse's choice of that outcome
    on an alarm nobody acknowledged leaves it unanswered."""
    by_nurse = AlertTiming(
        T0,
        None,
        None,
        resolved_ms=T0 + 300 * S,
        outcome="cancelled_by_client",
        resolved_by_person=True,
    )
    [day] = answer_times([by_nurse], T0, T0 + DAY, LATER)
    assert (day.unanswered, day.cancelled_by_client, day.within_180) == (1, 0, 0.0)


def test_a_day_of_only_client_cancels_has_a_row_without_shares() -> None:
    """The day is listed with its cancels; with no call to answer its shares are None, not 100 %."""
    cancelled = AlertTiming(T0, None, None, resolved_ms=T0 + 5 * S, outcome="cancelled_by_client")
    [day] = answer_times([cancelled], T0, T0 + DAY, LATER)
    assert (day.answered, day.unanswered, day.cancelled_by_client, day.within_60) == (0, 0, 1, None)


def test_answer_times_group_days_in_the_time_zone() -> None:
    """An alarm at 23:30 UTC falls on the next day in Amsterdam."""
    late = T0 + 23 * 3_600_000 + 30 * 60_000
    [utc, _] = answer_times([AlertTiming(late, late + S, "Anna")], T0, T0 + 2 * DAY, LATER)
    [ams, _] = answer_times(
        [AlertTiming(late, late + S, "Anna")], T0, T0 + 2 * DAY, LATER, ZoneInfo("Europe/Amsterdam")
    )
    assert (utc.day, ams.day) == ("2027-01-15", "2027-01-16")


def test_alarms_outside_the_window_are_left_out() -> None:
    """The window is half-open: an alarm opened exactly at ``until`` is not in it."""
    assert answer_times([AlertTiming(T0 + DAY, T0 + DAY + S, "A")], T0, T0 + DAY, LATER) == []


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


def test_cancelled_doses_are_neither_due_nor_missed() -> None:
    """A dose removed from the schedule before it was due is not counted at all."""
    doses = [DoseRecord(1, T0, "taken"), DoseRecord(1, T0 + HOUR, "cancelled")]
    [row] = adherence(doses, T0, T0 + DAY)
    assert (row.due, row.taken, row.missed, row.pending, row.adherence) == (1, 1, 0, 0, 1.0)


def test_a_client_with_only_cancelled_doses_has_no_row() -> None:
    """Cancelled doses alone make no adherence row (nothing was due)."""
    assert adherence([DoseRecord(1, T0, "cancelled")], T0, T0 + DAY) == []


def test_dispenser_reports_of_unscheduled_doses_become_doses() -> None:
    """Reports the schedule has no instance of: missed then taken is taken late, taken alone is taken,
    missed alone is missed; a report about a scheduled instance and a bare "due" make no dose."""
    reports = [
        DispenserReport(1, "noon", "missed", at_ms=T0 + 12 * HOUR + 50 * 60 * S),
        DispenserReport(1, "noon", "taken", at_ms=T0 + 14 * HOUR),
        DispenserReport(1, "night", "taken", at_ms=T0 + 22 * HOUR, due_ms=T0 + 22 * HOUR),
        DispenserReport(1, "tea", "missed", at_ms=T0 + 16 * HOUR, due_ms=T0 + 15 * HOUR),
        DispenserReport(1, "tea", "due", at_ms=T0 + 15 * HOUR, due_ms=T0 + 15 * HOUR),
        DispenserReport(1, "morning", "missed", at_ms=T0 + 9 * HOUR),  # the schedule has this one
        DispenserReport(2, "noon", "missed", at_ms=T0 + 12 * HOUR),  # another client
    ]
    instances = [DueInstance(1, "morning", T0 + 8 * HOUR)]
    records = dispenser_doses(reports, [], instances)
    assert sorted((r.client_id, r.due_ms, r.state, r.scheduled) for r in records) == [
        (1, T0 + 12 * HOUR + 50 * 60 * S, "taken_late", False),
        (1, T0 + 15 * HOUR, "missed", False),
        (1, T0 + 22 * HOUR, "taken", False),
        (2, T0 + 12 * HOUR, "missed", False),
    ]


def test_a_dose_taken_with_its_due_time_pairs_with_the_miss_of_that_time() -> None:
    """With due times given, a taken report settles the missed dose of the same due time only."""
    reports = [
        DispenserReport(1, "noon", "missed", at_ms=T0 + 13 * HOUR, due_ms=T0 + 12 * HOUR),
        DispenserReport(1, "noon", "taken", at_ms=T0 + 13 * HOUR + 5 * S, due_ms=T0 + 12 * HOUR),
        DispenserReport(1, "noon", "missed", at_ms=T0 + DAY + 13 * HOUR, due_ms=T0 + DAY + 12 * HOUR),
    ]
    records = dispenser_doses(reports, [], [])
    assert sorted((r.due_ms, r.state) for r in records) == [
        (T0 + 12 * HOUR, "taken_late"),
        (T0 + DAY + 12 * HOUR, "missed"),
    ]


def test_a_missed_dose_alert_without_a_report_counts_once() -> None:
    """A dispenser's missed-dose alert whose report is not at hand counts as a missed dose (taken late when
    it was resolved so); one explained by a report is not counted twice."""
    reports = [DispenserReport(1, "noon", "missed", at_ms=T0 + 12 * HOUR)]
    alerts = [
        DispenserMissAlert(1, "noon", opened_ms=T0 + 12 * HOUR, taken_late=False),  # the report's alert
        DispenserMissAlert(1, "tea", opened_ms=T0 + 16 * HOUR, taken_late=True),
        DispenserMissAlert(3, "noon", opened_ms=T0 + 12 * HOUR, taken_late=False),
    ]
    records = dispenser_doses(reports, alerts, [])
    assert sorted((r.client_id, r.due_ms, r.state) for r in records) == [
        (1, T0 + 12 * HOUR, "missed"),
        (1, T0 + 16 * HOUR, "taken_late"),
        (3, T0 + 12 * HOUR, "missed"),
    ]


def test_adherence_counts_dispenser_doses_apart_as_unscheduled() -> None:
    """Dispenser-only doses count in every figure, and ``unscheduled`` says how many there were."""
    doses = [
        DoseRecord(1, T0, "taken"),
        *dispenser_doses([DispenserReport(1, "noon", "missed", at_ms=T0 + 12 * HOUR)], [], []),
    ]
    [row] = adherence(doses, T0, T0 + DAY)
    assert (row.due, row.taken, row.missed, row.unscheduled, row.adherence) == (2, 1, 1, 1, 0.5)


def test_the_match_window_is_the_monitors() -> None:
    """A report is about a scheduled instance exactly when the monitor would have applied it to one."""
    assert MATCH_WINDOW_MS == monitor_doses.MATCH_WINDOW_MS
    reports = [
        DispenserReport(1, "d", "missed", at_ms=T0 + MATCH_WINDOW_MS - 1),
        DispenserReport(1, "d", "missed", at_ms=T0 + MATCH_WINDOW_MS),
    ]
    [record] = dispenser_doses(reports, [], [DueInstance(1, "d", T0)])
    assert record.due_ms == T0 + MATCH_WINDOW_MS


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


def test_service_down_is_the_gaps_between_runs_longer_than_the_grace() -> None:
    """A gap longer than the grace after a run's last beat is down; a short one (a restart) is not; before
    the first run nothing is known, after the last one the service is down until now."""
    runs = [
        RunSpan(T0, T0 + HOUR),
        RunSpan(T0 + HOUR + 20 * S, T0 + 3 * HOUR),  # restarted within the grace
        RunSpan(T0 + 5 * HOUR, T0 + 6 * HOUR),  # down 2 hours before this one
        RunSpan(T0 + 5 * HOUR + 10 * S, T0 + 7 * HOUR),  # a second gateway, overlapping
    ]
    now = T0 + 8 * HOUR
    assert service_down_periods(runs, grace_ms=30 * S, now_ms=now) == [
        (T0 + 3 * HOUR, T0 + 5 * HOUR),
        (T0 + 7 * HOUR, now),
    ]
    assert service_down_periods([RunSpan(T0, now - 10 * S)], grace_ms=30 * S, now_ms=now) == []
    assert service_down_periods([], grace_ms=30 * S, now_ms=now) == []


def test_uptime_leaves_out_the_service_downtime() -> None:
    """While the service itself was down the device is neither online, offline nor unreported."""
    device = DeviceHistory(
        "d1", created_ms=T0 - DAY, transitions=((T0 - 5, True), (T0 + 4 * HOUR, False), (T0 + 6 * HOUR, True))
    )
    down = [(T0 + 2 * HOUR, T0 + 5 * HOUR)]  # covers two hours online and one offline
    [row] = uptime([device], T0, T0 + DAY, now_ms=T0 + 10 * HOUR, service_down=down)
    assert (row.online_ms, row.offline_ms, row.unknown_ms, row.service_down_ms) == (
        6 * HOUR,
        HOUR,
        0,
        3 * HOUR,
    )
    assert row.share_online == 6 / 7


def test_service_downtime_before_a_device_existed_is_not_the_devices() -> None:
    """Downtime counts only for the part of the window the device existed."""
    device = DeviceHistory("d1", created_ms=T0 + 3 * HOUR, transitions=())
    [row] = uptime([device], T0, T0 + DAY, now_ms=T0 + 10 * HOUR, service_down=[(T0, T0 + 4 * HOUR)])
    assert (row.unknown_ms, row.service_down_ms) == (6 * HOUR, HOUR)


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
        resolved_ms=st.one_of(st.none(), _times),
        outcome=st.sampled_from([None, "talked_to_client", "cancelled_by_client"]),
        resolved_by_person=st.booleans(),
    ),
    max_size=40,
)


@given(_alerts, _times, st.integers(min_value=1, max_value=3 * DAY), _times)
def test_answer_shares_are_between_zero_and_one_and_counts_add_up(
    alerts: list[AlertTiming], since: int, length: int, now: int
) -> None:
    """Shares lie in [0, 1], within 60 s <= within 180 s, median <= p90; nurses add up to the day."""
    rows = answer_times(alerts, since, since + length, now)
    in_window = [a for a in alerts if since <= a.opened_ms < since + length]
    days = [r for r in rows if r.nurse is None]
    assert sum(r.answered + r.unanswered + r.cancelled_by_client for r in days) == len(in_window)
    for day in days:
        assert sum(r.answered for r in rows if r.day == day.day and r.nurse is not None) == day.answered
    for r in rows:
        if r.answered:
            assert r.within_60 is not None and r.within_180 is not None
            assert r.median_s is not None and r.p90_s is not None and 0 <= r.median_s <= r.p90_s
        if r.within_60 is not None and r.within_180 is not None:
            assert 0 <= r.within_60 <= r.within_180 <= 1


_doses = st.lists(
    st.builds(
        DoseRecord,
        st.integers(min_value=1, max_value=4),
        _times,
        st.sampled_from(["pending", "taken", "taken_late", "missed", "cancelled", "weird"]),
        st.booleans(),
    ),
    max_size=60,
)


@given(_doses, _times, st.integers(min_value=1, max_value=3 * DAY))
def test_adherence_counts_add_up_and_shares_are_bounded(
    doses: list[DoseRecord], since: int, length: int
) -> None:
    """due = taken + late + missed + pending, totals match the window, shares lie in [0, 1]."""
    rows = adherence(doses, since, since + length)
    counted = [d for d in doses if since <= d.due_ms < since + length and d.state != "cancelled"]
    assert sum(r.due for r in rows) == len(counted)
    assert sum(r.unscheduled for r in rows) == sum(not d.scheduled for d in counted)
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


_runs = st.lists(
    st.tuples(_times, st.integers(min_value=0, max_value=DAY)).map(lambda t: RunSpan(t[0], t[0] + t[1])),
    max_size=6,
)


@given(_histories, _times, st.integers(min_value=1, max_value=3 * DAY), _times, _runs)
def test_uptime_parts_add_up_to_the_covered_time(
    device: DeviceHistory, since: int, length: int, now: int, runs: list[RunSpan]
) -> None:
    """online + offline + unknown + service down is the part of the window after creation and before now;
    the service-down part is exactly the downtime inside it; share in [0, 1]."""
    down = service_down_periods(runs, grace_ms=30 * S, now_ms=now)
    [row] = uptime([device], since, since + length, now, service_down=down)
    start, end = max(since, device.created_ms), min(since + length, now)
    covered = max(0, end - start)
    assert row.online_ms + row.offline_ms + row.unknown_ms + row.service_down_ms == covered
    assert row.service_down_ms == sum(max(0, min(b, end) - max(a, start)) for a, b in down)
    assert min(row.online_ms, row.offline_ms, row.unknown_ms, row.service_down_ms) >= 0
    if row.share_online is not None:
        assert 0 <= row.share_online <= 1
