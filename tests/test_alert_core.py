"""The pure alert lifecycle and the event-to-alert policy."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from monitor.alerts import Action, AlertState, IllegalTransition, alert_for_event, answer_ms, transition


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
    ],
)
def test_illegal_moves_are_refused(state: AlertState, action: Action) -> None:
    """Anything not in the table raises IllegalTransition naming the state and action."""
    with pytest.raises(IllegalTransition, match=state.value):
        transition(state, action)


@given(st.lists(st.sampled_from(list(Action)), max_size=10))
def test_resolved_is_final(actions: list[Action]) -> None:
    """Whatever sequence of actions is tried, once resolved an alert never leaves resolved."""
    state = AlertState.OPEN
    resolved = False
    for action in actions:
        try:
            state = transition(state, action)
        except IllegalTransition:
            continue
        if resolved:
            raise AssertionError("a resolved alert moved")
        resolved = state is AlertState.RESOLVED
    assert resolved == (state is AlertState.RESOLVED)


def test_alarm_raises_critical_alert() -> None:
    """Every alarm event raises a priority-1 alarm alert, labelled by its kind."""
    spec = alert_for_event("alarm", json.dumps({"msg_id": "a", "ts": 1, "alarm_kind": "fall"}))
    assert spec is not None and spec.kind == "alarm" and spec.priority == 1 and spec.detail == "Fall detected"


def test_missed_dose_raises_alert_and_taken_does_not() -> None:
    """A dispenser's 'missed' raises a missed-dose alert; 'taken' and 'due' raise none."""
    missed = alert_for_event("dose", json.dumps({"event": "missed", "dose_id": "d1"}))
    assert missed is not None and missed.kind == "missed_dose" and missed.priority == 2
    assert alert_for_event("dose", json.dumps({"event": "taken", "dose_id": "d1"})) is None
    assert alert_for_event("dose", json.dumps({"event": "due", "dose_id": "d1"})) is None


def test_answer_time_never_negative() -> None:
    """A clock step backwards gives an answer time of zero, not a negative one."""
    assert answer_ms(10_000, 70_000) == 60_000
    assert answer_ms(10_000, 9_000) == 0
