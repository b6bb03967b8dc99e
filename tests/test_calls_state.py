"""The pure call lifecycle: the transition table, timeouts on a simulated clock, and the quality summary."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from central.calls.state import (
    END_REASONS,
    TRANSITIONS,
    CallState,
    Event,
    IllegalTransition,
    Quality,
    Timeouts,
    apply,
    due,
    gone,
    new_call,
    seen,
)

T0 = 1_800_000_000_000
TIMEOUTS = Timeouts()


def _call(direction: str = "outbound") -> object:
    return new_call("c1", direction=direction, kind="video", now_ms=T0)  # type: ignore[arg-type]


def test_happy_path_records_every_moment() -> None:
    """ringing -> accepted -> connected -> ended stamps answer, connect and end times and the reason."""
    call = new_call("c1", direction="outbound", kind="video", now_ms=T0)
    call = apply(call, Event.ACCEPT, T0 + 2_000)
    call = apply(call, Event.MEDIA_UP, T0 + 2_600)
    call = apply(call, Event.HANGUP_CLIENT, T0 + 60_000)
    assert (call.state, call.answered_ms, call.connected_ms, call.ended_ms, call.end_reason) == (
        CallState.ENDED,
        T0 + 2_000,
        T0 + 2_600,
        T0 + 60_000,
        "hangup_client",
    )


def test_ended_is_final() -> None:
    """Nothing moves a call out of ended; each attempt raises IllegalTransition."""
    call = apply(new_call("c1", direction="outbound", kind="video", now_ms=T0), Event.DECLINE, T0)
    for event in Event:
        with pytest.raises(IllegalTransition):
            apply(call, event, T0 + 1)


def test_decline_only_while_ringing() -> None:
    """A call that was answered cannot be declined any more."""
    call = apply(new_call("c1", direction="outbound", kind="video", now_ms=T0), Event.ACCEPT, T0)
    with pytest.raises(IllegalTransition):
        apply(call, Event.DECLINE, T0 + 1)


def test_reconnect_returns_to_accepted_and_counts() -> None:
    """A media path lost in a connected call renegotiates (accepted) without ringing; restarts are counted
    and the first connect time is kept."""
    call = new_call("c1", direction="outbound", kind="video", now_ms=T0)
    call = apply(apply(call, Event.ACCEPT, T0), Event.MEDIA_UP, T0 + 500)
    call = apply(call, Event.RECONNECT, T0 + 9_000)
    assert call.state is CallState.ACCEPTED and call.restarts == 1
    call = apply(call, Event.MEDIA_UP, T0 + 10_000)
    assert call.state is CallState.CONNECTED and call.connected_ms == T0 + 500


def test_every_path_into_ended_has_a_reason() -> None:
    """Each transition into ended maps to a documented end reason."""
    for (state, event), target in TRANSITIONS.items():
        if target is CallState.ENDED:
            call = new_call("c1", direction="outbound", kind="video", now_ms=T0)
            if state is not CallState.RINGING:
                call = apply(call, Event.ACCEPT, T0)
            if state is CallState.CONNECTED:
                call = apply(call, Event.MEDIA_UP, T0)
            assert apply(call, event, T0 + 1).end_reason in END_REASONS


def test_ring_timeout_fires_exactly_at_the_deadline() -> None:
    """due() returns nothing a millisecond before the ring timeout and ring_timeout at it."""
    call = new_call("c1", direction="outbound", kind="video", now_ms=T0)
    assert due(call, T0 + TIMEOUTS.ring_ms - 1, TIMEOUTS) is None
    assert due(call, T0 + TIMEOUTS.ring_ms, TIMEOUTS) is Event.RING_TIMEOUT


def test_connect_timeout_runs_from_the_answer() -> None:
    """An answered call that never gets media ends as connect_failed, counted from the answer."""
    call = apply(new_call("c1", direction="outbound", kind="video", now_ms=T0), Event.ACCEPT, T0 + 10_000)
    assert due(call, T0 + 10_000 + TIMEOUTS.connect_ms - 1, TIMEOUTS) is None
    assert due(call, T0 + 10_000 + TIMEOUTS.connect_ms, TIMEOUTS) is Event.CONNECT_TIMEOUT


def test_closed_socket_that_comes_back_keeps_the_call() -> None:
    """A socket that closes and reconnects within the grace (a network change) does not end the call."""
    call = seen(apply(_call(), Event.ACCEPT, T0), "client", T0)  # type: ignore[arg-type]
    call = gone(call, "client", T0 + 1_000)
    call = seen(call, "client", T0 + 1_000 + TIMEOUTS.reconnect_grace_ms - 1)
    assert due(call, T0 + 1_000 + TIMEOUTS.reconnect_grace_ms + 1, TIMEOUTS) is None


@settings(max_examples=300, deadline=None)
@given(
    last_ping=st.integers(min_value=0, max_value=600_000),
    closed_after=st.one_of(st.none(), st.integers(min_value=0, max_value=3_000)),
    tick_ms=st.sampled_from([100, 250, 500, 1_000]),
)
def test_a_vanished_peer_is_detected_within_15_seconds(
    last_ping: int, closed_after: int | None, tick_ms: int
) -> None:
    """Whenever a peer stops (silently, or with its socket closing), a ticker polling due() every tick_ms
    (up to 1 s) ends the call within 15 s of the peer's last sign of life."""
    call = seen(seen(_call(), "nurse", T0), "client", T0)  # type: ignore[arg-type]
    call = apply(apply(call, Event.ACCEPT, T0), Event.MEDIA_UP, T0)
    vanished = T0 + last_ping
    call = seen(seen(call, "client", vanished), "nurse", vanished)
    if closed_after is not None:
        call = gone(call, "client", vanished + closed_after)
    now = vanished
    nurse_seen = vanished
    while True:
        now += tick_ms
        # The nurse stays alive and keeps pinging every 3 s.
        if now - nurse_seen >= 3_000:
            nurse_seen = now
            call = seen(call, "nurse", now)
        event = due(call, now, TIMEOUTS)
        if event is not None:
            break
    assert event is Event.PEER_LOST_CLIENT
    assert now - vanished <= 15_000


class CallMachine(RuleBasedStateMachine):
    """Random events at random times: the call never leaves ended, and every end has a reason and a time."""

    def __init__(self) -> None:
        super().__init__()
        self.now = T0
        self.call = new_call("c1", direction="outbound", kind="video", now_ms=T0)
        self.ended_at: int | None = None

    @rule(event=st.sampled_from(list(Event)), dt=st.integers(min_value=0, max_value=60_000))
    def send(self, event: Event, dt: int) -> None:
        self.now += dt
        allowed = (self.call.state, event) in TRANSITIONS
        try:
            self.call = apply(self.call, event, self.now)
        except IllegalTransition:
            assert not allowed
            return
        assert allowed
        if self.call.state is CallState.ENDED:
            self.ended_at = self.now

    @precondition(lambda self: self.call.state is not CallState.ENDED)
    @rule(dt=st.integers(min_value=0, max_value=120_000))
    def tick(self, dt: int) -> None:
        self.now += dt
        event = due(self.call, self.now, TIMEOUTS)
        if event is not None:
            self.call = apply(self.call, event, self.now)
            if self.call.state is CallState.ENDED:
                self.ended_at = self.now

    @invariant()
    def end_is_complete(self) -> None:
        ended = self.call.state is CallState.ENDED
        assert ended == (self.call.end_reason is not None) == (self.call.ended_ms is not None)
        if ended:
            assert self.call.ended_ms == self.ended_at and self.call.end_reason in END_REASONS
            assert due(self.call, self.now + 10**9, TIMEOUTS) is None

    @invariant()
    def ringing_calls_are_unanswered(self) -> None:
        if self.call.state is CallState.RINGING:
            assert self.call.answered_ms is None


TestCallMachine = CallMachine.TestCase
TestCallMachine.settings = settings(max_examples=200, stateful_step_count=30, deadline=None)


def test_quality_summary() -> None:
    """Samples sum up to mean and minimum frame rate, worst loss and mean RTT; nonsense is clamped."""
    q = Quality().add(fps=20, loss_pct=0, rtt_ms=4).add(fps=10, loss_pct=2.5, rtt_ms=None)
    q = q.add(fps=-5, loss_pct=150, rtt_ms=8)
    assert q.summary() == {
        "samples": 3,
        "fps_mean": 10.0,
        "fps_min": 0.0,
        "loss_pct_max": 100.0,
        "rtt_ms_mean": 6.0,
    }
    assert Quality().summary()["fps_mean"] is None
