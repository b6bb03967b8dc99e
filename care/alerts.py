"""The alert lifecycle and the first policies, as pure functions of data (and ``now_ms`` where time matters).

Lifecycle (the whole table; any other move is refused)::

    open ──acknowledge──▶ acknowledged ──resolve──▶ resolved
      └──────────────────resolve / cancel──────────▲

The same machinery (``care.lifecycles.Lifecycle``) holds the lifecycles of escalation steps,
notifications, dose instances and visits.

Exceptions (drawn with the rest of the package's in ``care/__init__.py``)::

    IllegalTransition     the action is not allowed from the alert's current state (from ``care.errors``)
"""

from __future__ import annotations

import enum
from typing import Final

from .errors import IllegalTransition
from .lifecycles import Lifecycle

__all__ = [
    "AUTOMATIC_OUTCOMES",
    "OUTCOMES",
    "ALERT",
    "Action",
    "AlertState",
    "IllegalTransition",
    "answer_ms",
    "transition",
]


class AlertState(enum.StrEnum):
    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


class Action(enum.StrEnum):
    ACKNOWLEDGE = "acknowledge"
    RESOLVE = "resolve"
    CANCEL = "cancel"  # the client cancelled inside the pre-alarm window


ALERT: Final = Lifecycle[AlertState, Action](
    "alert",
    AlertState,
    {
        (AlertState.OPEN, Action.ACKNOWLEDGE): AlertState.ACKNOWLEDGED,
        (AlertState.OPEN, Action.RESOLVE): AlertState.RESOLVED,
        (AlertState.OPEN, Action.CANCEL): AlertState.RESOLVED,
        (AlertState.ACKNOWLEDGED, Action.RESOLVE): AlertState.RESOLVED,
    },
)

# Outcomes a person chooses on resolve; the monitor itself resolves with the automatic ones.
OUTCOMES: Final = frozenset(
    {"false_alarm", "talked_to_client", "nurse_sent", "emergency_services", "cancelled_by_client", "other"}
)
AUTOMATIC_OUTCOMES: Final = frozenset(
    {
        "back_online",
        "power_restored",
        "battery_ok",
        "dose_taken_late",
        "nurse_arrived",
        "cancelled_by_client",
        "device_removed",
    }
)


def transition(state: AlertState, action: Action) -> AlertState:
    """Return the state after ``action``; raise IllegalTransition for a move the table does not allow."""
    return ALERT.transition(state, action)


def answer_ms(opened_ms: int, acknowledged_ms: int) -> int:
    """Return the answer time of an alert (never negative, whatever the clocks did)."""
    return max(0, acknowledged_ms - opened_ms)
