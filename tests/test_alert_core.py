"""The pure alert lifecycle and the event-to-alert policy."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from care.alerts import Action, AlertState, IllegalTransition, answer_ms, transition
from care.policy import DEFAULT_POLICY
from care.rules import (
    CancelAlarm,
    DoseReport,
    EventContext,
    OpenAlert,
    ResolveAlerts,
    decide_event,
    steps_for,
    stock_alert,
)
from protocol.v1 import Alarm, AlarmCancel, DoseEvent, Status


@pytest.mark.parametrize(
    ("state", "action", "expected"),
    [
        (AlertState.OPEN, Action.ACKNOWLEDGE, AlertState.ACKNOWLEDGED),
        (AlertState.OPEN, Action.RESOLVE, AlertState.RESOLVED),
        (AlertState.OPEN, Action.CANCEL, AlertState.RESOLVED),
        (AlertState.ACKNOWLEDGED, Action.RESOLVE, AlertState.RESOLVED),
    ],
)
def test_allowed_moves(state: AlertState, action: Action, expected: AlertState) -> None:
    """The table's moves are allowed and land where the table says."""
    assert transition(state, action) is expected


@pytest.mark.parametrize(
    ("state", "action"),
    [
        (AlertState.ACKNOWLEDGED, Action.ACKNOWLEDGE),
        (AlertState.ACKNOWLEDGED, Action.CANCEL),
        (AlertState.RESOLVED, Action.ACKNOWLEDGE),
        (AlertState.RESOLVED, Action.RESOLVE),
        (AlertState.RESOLVED, Action.CANCEL),
        (AlertState.OPEN, Action.UNDO),
        (AlertState.ACKNOWLEDGED, Action.UNDO),
    ],
)
def test_illegal_moves_are_refused(state: AlertState, action: Action) -> None:
    """Anything not in the table raises IllegalTransition naming the state and action."""
    with pytest.raises(IllegalTransition, match=state.value):
        transition(state, action)


@given(st.lists(st.sampled_from(list(Action)), max_size=10))
def test_resolved_is_final(actions: list[Action]) -> None:
    """Whatever sequence of actions is tried, a resolved alert leaves resolved only by an undo, and then
    back to in progress (who may undo, and until when, is care.alerts.may_undo's)."""
    state = AlertState.OPEN
    resolved = False
    for action in actions:
        try:
            state = transition(state, action)
        except IllegalTransition:
            continue
        if resolved and (action, state) != (Action.UNDO, AlertState.ACKNOWLEDGED):
            raise AssertionError("a resolved alert moved")
        resolved = state is AlertState.RESOLVED
    assert resolved == (state is AlertState.RESOLVED)


def test_alarm_raises_critical_alert() -> None:
    """Every alarm event raises a priority-1 alarm alert, labelled by its kind."""
    [effect] = decide_event(Alarm("btn", "a", 1, alarm_kind="fall"), EventContext("alarm_button"))
    assert effect == OpenAlert("alarm", 1, "Fall detected")


def test_cancel_and_doses_become_their_own_effects() -> None:
    """An alarm cancel and dose reports are handed on as such, not as new alerts."""
    assert decide_event(AlarmCancel("btn", "c1", 1, "a1"), EventContext("alarm_button")) == [
        CancelAlarm("a1")
    ]
    assert decide_event(DoseEvent("med", "m1", 1, "taken", "d1"), EventContext("dispenser")) == [
        DoseReport("d1", "taken", None)
    ]


def test_offline_priority_depends_on_the_device() -> None:
    """An offline alarm button is urgent (the client is unprotected); an offline dispenser less so."""
    [button] = decide_event(Status("btn", False), EventContext("alarm_button"))
    [dispenser] = decide_event(Status("med", False), EventContext("dispenser"))
    assert isinstance(button, OpenAlert) and isinstance(dispenser, OpenAlert)
    assert button.priority < dispenser.priority
    assert decide_event(Status("med", True), EventContext("dispenser"))[0] == ResolveAlerts(
        "offline", "back_online", "The device is back online"
    )


def test_alarm_escalates_at_60_and_180_seconds() -> None:
    """By default an alarm escalates at 60 s and 180 s (TEC Quality answer targets)."""
    steps = steps_for("alarm", 1, 1_000, DEFAULT_POLICY)
    assert [(s.level, s.due_ms) for s in steps] == [(1, 61_000), (2, 181_000)]


def test_stock_warning_72_hours_before_empty() -> None:
    """Stock for less than 72 h (at the client's doses per day) raises a stock alert; more does not."""
    assert stock_alert(8, 3, DEFAULT_POLICY) is not None  # 64 h
    assert stock_alert(10, 3, DEFAULT_POLICY) is None  # 80 h


def test_answer_time_never_negative() -> None:
    """A clock step backwards gives an answer time of zero, not a negative one."""
    assert answer_ms(10_000, 70_000) == 60_000
    assert answer_ms(10_000, 9_000) == 0
