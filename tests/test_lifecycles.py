"""The lifecycle tables of steps, notifications, dose instances and visits (care.lifecycles), and migration
0009, which turned an escalation step's ``subject`` string into foreign keys."""

from __future__ import annotations

import enum
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import text

from care.alerts import ALERT, Action, AlertState
from care.errors import CareError, IllegalTransition
from care.lifecycles import (
    DOSE,
    NOTIFICATION,
    STEP,
    VISIT,
    DoseEvent,
    DoseState,
    Lifecycle,
    NotificationEvent,
    NotificationState,
    StepEvent,
    StepState,
    VisitEvent,
    VisitState,
)
from storage.db import downgrade, make_engine, upgrade

LIFECYCLES: list[tuple[Lifecycle[Any, Any], type[enum.StrEnum], type[enum.StrEnum], set[str]]] = [
    (ALERT, AlertState, Action, set()),  # resolved: only the resolving nurse's undo, within 30 s
    (STEP, StepState, StepEvent, {"done", "cancelled"}),
    (NOTIFICATION, NotificationState, NotificationEvent, {"sent", "failed", "cancelled"}),
    (DOSE, DoseState, DoseEvent, {"taken", "taken_late", "cancelled"}),
    (VISIT, VisitState, VisitEvent, {"arrived", "cancelled"}),
]


@pytest.mark.parametrize(("lifecycle", "states", "events", "final"), LIFECYCLES)
def test_final_states_have_no_way_out(
    lifecycle: Lifecycle[Any, Any], states: type[enum.StrEnum], events: type[enum.StrEnum], final: set[str]
) -> None:
    """A final state (done, sent, arrived ...) refuses every event; every other state allows one."""
    for state in states:
        allowed = [e for e in events if lifecycle.after(state, e) is not None]
        assert (not allowed) == (state.value in final), (state, allowed)


@pytest.mark.parametrize(("lifecycle", "states", "events", "final"), LIFECYCLES)
def test_a_bulk_move_lands_in_one_state(
    lifecycle: Lifecycle[Any, Any], states: type[enum.StrEnum], events: type[enum.StrEnum], final: set[str]
) -> None:
    """What a conditional UPDATE writes is the one state an event lands in, from every state it allows;
    an event that lands where the state says (a dose taken on time or late) has no such state."""
    for event in events:
        targets = {lifecycle.after(s, event) for s in lifecycle.sources(event)}
        if len(targets) == 1:
            assert targets == {lifecycle.target(event)}
        else:
            assert (lifecycle, event) == (DOSE, DoseEvent.TAKE)
            with pytest.raises(ValueError):
                lifecycle.target(event)


def test_a_refused_move_names_the_item_state_and_event() -> None:
    """Anything not in a table raises IllegalTransition, a CareError, naming what was refused."""
    with pytest.raises(IllegalTransition, match="cannot take a dose that is cancelled") as caught:
        DOSE.transition("cancelled", DoseEvent.TAKE)
    assert isinstance(caught.value, CareError)
    with pytest.raises(IllegalTransition, match="cannot run an escalation step that is done"):
        STEP.transition(StepState.DONE, StepEvent.RUN)


def test_stored_strings_are_the_states() -> None:
    """A state read back from the database as a plain string finds its moves; an unknown one finds none."""
    assert DOSE.after("missed", DoseEvent.TAKE) is DoseState.TAKEN_LATE
    assert NOTIFICATION.after("sending", NotificationEvent.DELIVER) is NotificationState.SENT
    assert VISIT.after("weird", VisitEvent.ARRIVE) is None


@given(st.lists(st.sampled_from(list(NotificationEvent)), max_size=12))
def test_a_cancelled_notification_is_never_sent(events: list[NotificationEvent]) -> None:
    """Whatever happens after an acknowledgement cancelled a pending notification, it stays cancelled."""
    state = NOTIFICATION.transition(NotificationState.PENDING, NotificationEvent.CANCEL)
    for event in events:
        state = NOTIFICATION.after(state, event) or state
    assert state is NotificationState.CANCELLED


def _rows(url: str, sql: str) -> list[tuple[Any, ...]]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(text(sql))]
    finally:
        engine.dispose()


def test_migration_0009_carries_step_subjects_over_to_foreign_keys(db_url: str) -> None:
    """``dose:17`` and ``visit:3`` become the step's dose_instance_id and visit_id; a subject naming no row
    leaves them empty; the downgrade writes the subjects back."""
    upgrade(db_url, "0008")
    engine = make_engine(db_url)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO clients (id, name, address, district, created_ms, access_notes, care_notes,"
                " system) VALUES (1, 'c', '', '', 0, '', '', false)"
            )
        )
        conn.execute(
            text(
                "INSERT INTO dose_instances (id, client_id, dose_id, due_ms, state, reminded)"
                " VALUES (17, 1, 'd', 5, 'pending', false)"
            )
        )
        conn.execute(
            text(
                "INSERT INTO visits (id, client_id, visitor, sent_ms, target_ms, state)"
                " VALUES (3, 1, 'v', 0, 10, 'underway')"
            )
        )
        for i, (subject, action) in enumerate(
            [
                ("dose:17", "dose_remind"),
                ("visit:3", "visit_check"),
                ("dose:999", "dose_check"),
                (None, "escalate"),
            ],
            start=1,
        ):
            conn.execute(
                text(
                    "INSERT INTO escalation_steps (id, subject, action, level, due_ms, state, created_ms)"
                    " VALUES (:i, :s, :a, 0, 1, 'pending', 0)"
                ),
                {"i": i, "s": subject, "a": action},
            )
    engine.dispose()
    upgrade(db_url)
    assert _rows(db_url, "SELECT id, dose_instance_id, visit_id FROM escalation_steps ORDER BY id") == [
        (1, 17, None),
        (2, None, 3),
        (3, None, None),
        (4, None, None),
    ]
    downgrade(db_url, "0008")
    assert _rows(db_url, "SELECT id, subject FROM escalation_steps ORDER BY id") == [
        (1, "dose:17"),
        (2, "visit:3"),
        (3, None),
        (4, None),
    ]
