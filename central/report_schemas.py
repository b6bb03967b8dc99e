"""The reports' JSON answers (``central.reports``); the rows are :mod:`central.report_calc`'s, as dicts."""

from __future__ import annotations

from typing import Any, Final

from pydantic import BaseModel

__all__ = ["CSV", "AdherenceReport", "AnswerTimesReport", "UptimeReport"]

# Each report is also a CSV download with ``?format=csv``.
CSV: Final[dict[int | str, dict[str, Any]]] = {
    200: {"content": {"text/csv": {}}, "description": "JSON, or with ?format=csv a CSV download"}
}


class _Span(BaseModel):
    since_ms: int
    until_ms: int
    tz: str
    definitions: dict[str, str]  # what each figure means, as the page shows it


class Targets(BaseModel):
    within_60: float
    within_180: float


class AnswerTimeRow(BaseModel):
    """One day, for one nurse or (``nurse`` null) for everyone; shares and times are null without data."""

    day: str
    nurse: str | None
    answered: int
    unanswered: int
    cancelled_by_client: int
    within_60: float | None
    within_180: float | None
    median_s: float | None
    p90_s: float | None


class OutcomeCount(BaseModel):
    """Closed alarms opened on ``day`` with ``outcome`` (central.report_outcomes)."""

    day: str
    outcome: str
    alarms: int


class AnswerTimesReport(_Span):
    targets: Targets
    days: list[AnswerTimeRow]
    nurses: list[AnswerTimeRow]
    outcomes: list[OutcomeCount]


class AdherenceRow(BaseModel):
    client_name: str
    client_id: int
    due: int
    taken: int
    taken_late: int
    missed: int
    pending: int
    unscheduled: int
    adherence: float | None
    on_time: float | None


class AdherenceReport(_Span):
    clients: list[AdherenceRow]


class UptimeRow(BaseModel):
    device_id: str
    label: str
    kind: str
    client_name: str
    online_now: bool | None
    online_ms: int
    offline_ms: int
    unknown_ms: int
    service_down_ms: int
    share_online: float | None
    changes: int


class UptimeReport(_Span):
    devices: list[UptimeRow]
