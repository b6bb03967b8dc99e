"""How the care station closed its alarms: per day, how many with each outcome (pure, as
:mod:`central.report_calc`; the answer-times report carries it as ``outcomes``).

An alarm counts on the day it was opened (in the report's time zone), as its answer time does, once it is
closed; one still open or in progress has no outcome yet and is not counted here. Every stored code is
counted as it is: the codes nurses choose now (``care.alerts.OUTCOMES``), the ones chosen before them
(``LEGACY_OUTCOMES``), and those the monitor closes with (``cancelled_by_client``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from typing import Final

from care.alerts import OUTCOMES

from .report_calc import AlertTiming

__all__ = ["DEFINITION", "OutcomeRow", "outcome_counts"]

DEFINITION: Final = (
    "Closed alarms per outcome, on the day they were opened: false alarm, reassured, contact attended, "
    "district nurse attended, ambulance, fire service, no response — visit (and older codes as stored)."
)


@dataclass(frozen=True, slots=True)
class OutcomeRow:
    day: str  # YYYY-MM-DD in the report's time zone
    outcome: str
    alarms: int


def outcome_counts(
    alerts: Iterable[AlertTiming], since_ms: int, until_ms: int, tz: tzinfo = UTC
) -> list[OutcomeRow]:
    """Per day and outcome, the closed alarms opened in ``[since_ms, until_ms)``; days in order, within a
    day the chosen codes in their order, then any other code alphabetically."""
    counts: Counter[tuple[str, str]] = Counter()
    for alert in alerts:
        if alert.outcome is None or not since_ms <= alert.opened_ms < until_ms:
            continue
        day = datetime.fromtimestamp(alert.opened_ms / 1000, tz).date().isoformat()
        counts[(day, alert.outcome)] += 1
    rank = {code: i for i, code in enumerate(OUTCOMES)}
    ordered = sorted(counts, key=lambda k: (k[0], rank.get(k[1], len(rank)), k[1]))
    return [OutcomeRow(day, outcome, counts[(day, outcome)]) for day, outcome in ordered]
