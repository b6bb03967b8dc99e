"""The reports count how alarms were closed (#14 item 4): per day and outcome code, the new codes in the
care stations' order, older stored codes as they are; open alarms have no outcome yet."""

from __future__ import annotations

from zoneinfo import ZoneInfo

from central.report_calc import AlertTiming
from central.report_outcomes import OutcomeRow, outcome_counts

DAY = 86_400_000
T0 = 1_799_971_200_000  # 2027-01-15 00:00 UTC


def _closed(opened: int, outcome: str | None) -> AlertTiming:
    return AlertTiming(opened, opened + 30_000, "Anna", opened + 600_000 if outcome else None, outcome, True)


def test_outcomes_are_counted_per_day_in_the_codes_order() -> None:
    alerts = [
        _closed(T0 + 3_600_000, "ambulance"),
        _closed(T0 + 7_200_000, "false_alarm"),
        _closed(T0 + 8_000_000, "ambulance"),
        _closed(T0 + 9_000_000, "talked_to_client"),  # an older code, as stored
        _closed(T0 + 9_500_000, None),  # still in progress: not counted
        _closed(T0 + DAY + 60_000, "fire_service"),
        _closed(T0 + 2 * DAY, "reassured"),  # outside the window
    ]
    assert outcome_counts(alerts, T0, T0 + 2 * DAY) == [
        OutcomeRow("2027-01-15", "false_alarm", 1),
        OutcomeRow("2027-01-15", "ambulance", 2),
        OutcomeRow("2027-01-15", "talked_to_client", 1),
        OutcomeRow("2027-01-16", "fire_service", 1),
    ]


def test_an_alarm_counts_on_the_day_it_was_opened_in_the_reports_zone() -> None:
    """23:30 UTC on the 15th is 00:30 on the 16th in Amsterdam."""
    late = _closed(T0 + DAY - 1_800_000, "no_response_visit")
    rows = outcome_counts([late], T0, T0 + 2 * DAY, ZoneInfo("Europe/Amsterdam"))
    assert rows == [OutcomeRow("2027-01-16", "no_response_visit", 1)]
