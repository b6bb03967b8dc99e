"""The alert lifecycle and the first policies, as pure functions of data (and ``now_ms`` where time matters).

Lifecycle (the whole table; any other move is refused)::

    open ──acknowledge──▶ acknowledged ──resolve──▶ resolved
      └──────────────────resolve / cancel──────────▲

Exceptions::

    IllegalTransition     the action is not allowed from the alert's current state
"""

from __future__ import annotations

import enum
import logging
from typing import Final

__all__ = [
    "AUTOMATIC_OUTCOMES",
    "OUTCOMES",
    "Action",
    "AlertState",
    "IllegalTransition",
    "answer_ms",
    "transition",
]

log = logging.getLogger(__name__)


class AlertState(enum.StrEnum):
    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


class Action(enum.StrEnum):
    ACKNOWLEDGE = "acknowledge"
    RESOLVE = "resolve"
    CANCEL = "cancel"  # the client cancelled inside the pre-alarm window


_TRANSITIONS: Final[dict[tuple[AlertState, Action], AlertState]] = {
    (AlertState.OPEN, Action.ACKNOWLEDGE): AlertState.ACKNOWLEDGED,
    (AlertState.OPEN, Action.RESOLVE): AlertState.RESOLVED,
    (AlertState.OPEN, Action.CANCEL): AlertState.RESOLVED,
    (AlertState.ACKNOWLEDGED, Action.RESOLVE): AlertState.RESOLVED,
}

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


class IllegalTransition(ValueError):
    """The action is not allowed from the current state."""

    def __init__(self, state: AlertState, action: Action) -> None:
        super().__init__(f"cannot {action.value} an alert that is {state.value}")
        self.state = state
        self.action = action


def transition(state: AlertState, action: Action) -> AlertState:
    """Return the state after ``action``; raise IllegalTransition for a move the table does not allow."""
    new = _TRANSITIONS.get((state, action))
    if new is None:
        raise IllegalTransition(state, action)
    log.debug("alert %s -> %s (%s)", state.value, new.value, action.value)
    return new


def answer_ms(opened_ms: int, acknowledged_ms: int) -> int:
    """Return the answer time of an alert (never negative, whatever the clocks did)."""
    return max(0, acknowledged_ms - opened_ms)
