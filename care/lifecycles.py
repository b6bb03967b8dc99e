"""The lifecycles of the care domain's work items, as enums and transition tables (pure; ``care.alerts``
holds the alert's, built the same way).

Each table is the whole lifecycle: any move it does not list is refused. The stored columns keep the
enums' string values, so a row reads the same as before the enums were written.

Escalation step (``escalation_steps.state``)::

    pending ──run──▶ done
       └──cancel──▶ cancelled          (its alert was acknowledged or resolved, its dose or visit settled)

Notification (``notifications.state``)::

    pending ──claim──▶ sending ──deliver──▶ sent
     │  ▲                │
     │  └─retry/recover──┤             (a failed try with tries left; a lease left by a crashed sender)
     │                   └──give_up──▶ failed
     ├──refuse──▶ failed               (its channel is not configured)
     ├──deliver──▶ sent                (a send that finished after its row was recovered: not sent again)
     └──cancel──▶ cancelled            (the alert was acknowledged)

Dose instance (``dose_instances.state``)::

    pending ──take──▶ taken
       ├──miss──▶ missed ──take──▶ taken_late   (counted as missed all the same, never a double dose)
       └──cancel──▶ cancelled                   (removed from the schedule before it was due)

Visit (``visits.state``)::

    underway ──arrive──▶ arrived
        └──cancel──▶ cancelled

An escalation step also says what it does when it runs (:class:`StepAction`); ``care.steps`` dispatches
each action from a table of handlers.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Mapping
from typing import Final, Generic, TypeVar

from sqlalchemy import ColumnElement
from sqlalchemy.orm import InstrumentedAttribute

from .errors import IllegalTransition

__all__ = [
    "DOSE",
    "NOTIFICATION",
    "STEP",
    "VISIT",
    "DoseEvent",
    "DoseState",
    "IllegalTransition",
    "Lifecycle",
    "NotificationEvent",
    "NotificationState",
    "StepAction",
    "StepEvent",
    "StepState",
    "VisitEvent",
    "VisitState",
]

log = logging.getLogger(__name__)

S = TypeVar("S", bound=enum.StrEnum)
E = TypeVar("E", bound=enum.StrEnum)


class Lifecycle(Generic[S, E]):
    """One lifecycle's transition table: ``(state, event) -> new state``, and nothing else allowed."""

    def __init__(self, name: str, states: type[S], table: Mapping[tuple[S, E], S]) -> None:
        self.name = name  # "visit": what the log and a refusal call the item
        self._states = states
        self._values = frozenset(state.value for state in states)
        self._table = dict(table)

    def after(self, state: str, event: E) -> S | None:
        """The state after ``event`` (logged like any move), or None when the table does not allow it from
        ``state`` (an unknown state included)."""
        if state not in self._values or (self._states(state), event) not in self._table:
            return None
        return self.transition(state, event)

    def transition(self, state: str, event: E) -> S:
        """The state after ``event``; raise IllegalTransition for a move the table does not allow."""
        old = self._states(state)
        new = self._table.get((old, event))
        if new is None:
            article = "an" if self.name[0] in "aeiou" else "a"
            raise IllegalTransition(old, event, f"{article} {self.name}")
        log.debug("%s %s -> %s (%s)", self.name, old.value, new.value, event.value)
        return new

    def sources(self, event: E) -> tuple[S, ...]:
        """Every state ``event`` moves from, in the table's order."""
        return tuple(state for state, e in self._table if e == event)

    def target(self, event: E) -> S:
        """The one state ``event`` moves every row to, for a bulk UPDATE; ValueError for an event whose
        target depends on the state (a dose taken on time or late)."""
        targets = {new for (_, e), new in self._table.items() if e == event}
        if len(targets) != 1:
            raise ValueError(f"{event.value} moves {self.name} to {len(targets)} states")
        return targets.pop()

    def where(self, column: InstrumentedAttribute[str], event: E) -> ColumnElement[bool]:
        """SQL for "the row's state allows ``event``", the guard of a conditional UPDATE: whoever moves the
        row first wins, and a later mover's UPDATE changes nothing."""
        sources = self.sources(event)
        # One state: ``=``, as the partial indexes on ``state = 'pending'`` are written.
        return column == sources[0] if len(sources) == 1 else column.in_(sources)


class StepState(enum.StrEnum):
    PENDING = "pending"
    DONE = "done"
    CANCELLED = "cancelled"


class StepEvent(enum.StrEnum):
    RUN = "run"
    CANCEL = "cancel"


class StepAction(enum.StrEnum):
    """What a step does when it comes due."""

    ESCALATE = "escalate"  # raise its alert a level and page that level
    DOSE_REMIND = "dose_remind"  # at a dose's due time: remind the client if the dispenser did not
    DOSE_CHECK = "dose_check"  # at due + grace: a dose still not taken is missed
    VISIT_CHECK = "visit_check"  # at a visit's target time: alert when the visitor has not arrived


STEP: Final = Lifecycle[StepState, StepEvent](
    "escalation step",
    StepState,
    {
        (StepState.PENDING, StepEvent.RUN): StepState.DONE,
        (StepState.PENDING, StepEvent.CANCEL): StepState.CANCELLED,
    },
)


class NotificationState(enum.StrEnum):
    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"
    CANCELLED = "cancelled"


class NotificationEvent(enum.StrEnum):
    CLAIM = "claim"
    REFUSE = "refuse"
    DELIVER = "deliver"
    RETRY = "retry"
    GIVE_UP = "give_up"
    RECOVER = "recover"
    CANCEL = "cancel"


_N, _NE = NotificationState, NotificationEvent
NOTIFICATION: Final = Lifecycle[NotificationState, NotificationEvent](
    "notification",
    NotificationState,
    {
        (_N.PENDING, _NE.CLAIM): _N.SENDING,
        (_N.PENDING, _NE.REFUSE): _N.FAILED,
        (_N.SENDING, _NE.DELIVER): _N.SENT,
        # Had recover_stuck taken the row back meanwhile, marking it sent stops a second send.
        (_N.PENDING, _NE.DELIVER): _N.SENT,
        (_N.SENDING, _NE.RETRY): _N.PENDING,
        (_N.SENDING, _NE.GIVE_UP): _N.FAILED,
        (_N.SENDING, _NE.RECOVER): _N.PENDING,
        (_N.PENDING, _NE.CANCEL): _N.CANCELLED,
    },
)


class DoseState(enum.StrEnum):
    PENDING = "pending"
    TAKEN = "taken"
    MISSED = "missed"
    TAKEN_LATE = "taken_late"
    CANCELLED = "cancelled"


class DoseEvent(enum.StrEnum):
    TAKE = "take"
    MISS = "miss"
    CANCEL = "cancel"


DOSE: Final = Lifecycle[DoseState, DoseEvent](
    "dose",
    DoseState,
    {
        (DoseState.PENDING, DoseEvent.TAKE): DoseState.TAKEN,
        (DoseState.PENDING, DoseEvent.MISS): DoseState.MISSED,
        (DoseState.PENDING, DoseEvent.CANCEL): DoseState.CANCELLED,
        (DoseState.MISSED, DoseEvent.TAKE): DoseState.TAKEN_LATE,
    },
)


class VisitState(enum.StrEnum):
    UNDERWAY = "underway"
    ARRIVED = "arrived"
    CANCELLED = "cancelled"


class VisitEvent(enum.StrEnum):
    ARRIVE = "arrive"
    CANCEL = "cancel"


VISIT: Final = Lifecycle[VisitState, VisitEvent](
    "visit",
    VisitState,
    {
        (VisitState.UNDERWAY, VisitEvent.ARRIVE): VisitState.ARRIVED,
        (VisitState.UNDERWAY, VisitEvent.CANCEL): VisitState.CANCELLED,
    },
)
