"""The alert lifecycle and the first policies, as pure functions of data (and ``now_ms`` where time matters).

Lifecycle (the whole table; any other move is refused)::

    open ──acknowledge──▶ acknowledged ──resolve──▶ resolved
      │                        ▲                      │
      │                        └────────undo──────────┘   (the nurse who resolved it, within UNDO_WINDOW_MS)
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
    "ALERT",
    "AUTOMATIC_OUTCOMES",
    "LEGACY_OUTCOMES",
    "OUTCOMES",
    "UNDO_WINDOW_MS",
    "Action",
    "AlertState",
    "IllegalTransition",
    "answer_ms",
    "may_undo",
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
    UNDO = "undo"  # the nurse who resolved it takes it back, within UNDO_WINDOW_MS


ALERT: Final = Lifecycle[AlertState, Action](
    "alert",
    AlertState,
    {
        (AlertState.OPEN, Action.ACKNOWLEDGE): AlertState.ACKNOWLEDGED,
        (AlertState.OPEN, Action.RESOLVE): AlertState.RESOLVED,
        (AlertState.OPEN, Action.CANCEL): AlertState.RESOLVED,
        (AlertState.ACKNOWLEDGED, Action.RESOLVE): AlertState.RESOLVED,
        (AlertState.RESOLVED, Action.UNDO): AlertState.ACKNOWLEDGED,
    },
)

# How long the nurse who resolved an alert may take it back. Long enough to notice a wrong outcome or a
# slip of the mouse right after closing (the console offers "Undo" that long); short enough that the
# handover and the reports are not rewritten later — after it, a correction is a note on the alert.
UNDO_WINDOW_MS: Final = 30_000

# Outcomes a person chooses on resolve (never pre-selected): the codes care stations report on. The
# monitor itself resolves with the automatic ones.
OUTCOMES: Final = (
    "false_alarm",  # pressed by mistake, nothing wrong
    "reassured",  # talked to the client, reassured; nobody sent
    "contact_attended",  # a contact (family, neighbour, keyholder) went round
    "district_nurse_attended",  # the district nurse (or a responder) visited
    "ambulance",  # 112: ambulance
    "fire_service",  # 112: fire service (smoke, heat, CO)
    "no_response_visit",  # no answer on the unit: someone was sent to look
)
# Outcomes chosen before these codes (stored on old alerts): still read, shown and counted as they are,
# no longer offered.
LEGACY_OUTCOMES: Final = frozenset(
    {"talked_to_client", "nurse_sent", "emergency_services", "cancelled_by_client", "other"}
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


def may_undo(resolved_ms: int | None, resolved_by: int | None, actor_id: int, now_ms: int) -> str | None:
    """Why ``actor_id`` may not undo a resolve at ``now_ms`` (None: she may): only the person who resolved
    it, and only within UNDO_WINDOW_MS."""
    if resolved_ms is None or resolved_by is None:
        return "it was not resolved by a person"
    if resolved_by != actor_id:
        return "only the nurse who resolved it can undo it"
    if now_ms - resolved_ms > UNDO_WINDOW_MS:
        return f"the {UNDO_WINDOW_MS // 1000} s to undo are over; add a note instead"
    return None


def answer_ms(opened_ms: int, acknowledged_ms: int) -> int:
    """Return the answer time of an alert (never negative, whatever the clocks did)."""
    return max(0, acknowledged_ms - opened_ms)
