"""The alert lifecycle and the first policies, as pure functions of data (and ``now_ms`` where time matters).

Lifecycle (the whole table; any other move is refused)::

    open ──acknowledge──▶ acknowledged ──resolve──▶ resolved
      └──────────────────resolve / cancel──────────▲

Exceptions::

    IllegalTransition     the action is not allowed from the alert's current state
"""

from __future__ import annotations

import enum
import json
import logging
from dataclasses import dataclass
from typing import Final

__all__ = [
    "OUTCOMES",
    "Action",
    "AlertSpec",
    "AlertState",
    "IllegalTransition",
    "alert_for_event",
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

OUTCOMES: Final = frozenset(
    {"false_alarm", "talked_to_client", "nurse_sent", "emergency_services", "cancelled_by_client", "other"}
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


@dataclass(frozen=True, slots=True)
class AlertSpec:
    """What alert a device event raises."""

    kind: str
    priority: int  # 1 critical, 2 high, 3 normal, 4 low
    detail: str


_ALARM_LABELS: Final = {
    "button": "Alarm button pressed",
    "pendant": "Pendant alarm",
    "fall": "Fall detected",
    "smoke": "Smoke detector",
    "bed_exit": "Out of bed",
    "door": "Door opened",
    "other": "Alarm",
}


def alert_for_event(kind: str, payload_json: str) -> AlertSpec | None:
    """Return the alert a stored device event raises, or None when it raises none."""
    payload = json.loads(payload_json)
    if kind == "alarm":
        alarm_kind = payload.get("alarm_kind", "button")
        return AlertSpec("alarm", 1, _ALARM_LABELS.get(alarm_kind, "Alarm"))
    if kind == "dose" and payload.get("event") == "missed":
        return AlertSpec("missed_dose", 2, f"Dose {payload.get('dose_id', '?')} not taken")
    return None
