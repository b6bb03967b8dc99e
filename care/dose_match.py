"""Which scheduled dose instance a dispenser's dose report is about: one rule, pure, for the monitor (which
applies the report to it), the client's timeline (which shows the report only when it matches none) and the
adherence report (which counts such a dose only once).

A report is about the instance of the same client and dose id whose due time is nearest to the report's
``due_ts`` — or, when the dispenser gave none, to the moment the report arrived — and less than
:data:`MATCH_WINDOW_MS` away from it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Final, TypeVar

__all__ = ["MATCH_WINDOW_MS", "match_bounds", "nearest_instance", "report_target", "scheduled"]

# Half a day: doses of one id are a day apart, so the nearest instance within it is the report's, and a
# report about yesterday's dose (a dispenser that was offline overnight) is not taken for today's.
MATCH_WINDOW_MS: Final = 12 * 3600 * 1000

T = TypeVar("T")


def report_target(due_ms: int | None, received_ms: int) -> int:
    """The time a report is about: the due time it gave, else the moment it arrived."""
    return due_ms if due_ms is not None else received_ms


def match_bounds(target_ms: int) -> tuple[int, int]:
    """The open interval of due times a report about ``target_ms`` may match (to narrow a query)."""
    return target_ms - MATCH_WINDOW_MS, target_ms + MATCH_WINDOW_MS


def nearest_instance(instances: Iterable[T], target_ms: int, due_ms: Callable[[T], int]) -> T | None:
    """The instance (of the report's client and dose id) the report is about, or None.

    ``due_ms`` gives an instance's due time; of equally near instances the first wins.
    """
    near = (i for i in instances if abs(due_ms(i) - target_ms) < MATCH_WINDOW_MS)
    return min(near, key=lambda i: abs(due_ms(i) - target_ms), default=None)


def scheduled(due_times: Iterable[int], target_ms: int) -> bool:
    """Is a report about ``target_ms`` about one of these due times (its client's instances of the dose)?"""
    return nearest_instance(due_times, target_ms, due_ms=int) is not None
