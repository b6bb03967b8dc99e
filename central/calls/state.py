"""The pure call lifecycle: a transition table, liveness deadlines and the quality summary; no clock, no I/O.

::

    ringing ──accept──▶ accepted ──media_up──▶ connected
       │                  ▲   │                  │
       │                  └───┼──reconnect───────┘   (ICE failed / network changed: fresh peer connections)
       ▼                      ▼                      ▼
     ended  ◀── decline, ring_timeout, connect_timeout, hangup_*, peer_lost_*, unreachable, shutdown

Every move into ``ended`` carries a reason (:data:`END_REASONS`). Timeouts are not timers here: the
signalling adapter calls :func:`due` with ``now_ms`` and applies the event it returns.

Exceptions::

    IllegalTransition        an event that the call's state does not allow (e.g. anything after ``ended``)
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from enum import StrEnum
from typing import Final, Literal

__all__ = [
    "END_REASONS",
    "Call",
    "CallState",
    "Event",
    "IllegalTransition",
    "Quality",
    "Side",
    "Timeouts",
    "apply",
    "due",
    "gone",
    "new_call",
    "seen",
]

log = logging.getLogger(__name__)

Side = Literal["nurse", "client"]


class CallState(StrEnum):
    RINGING = "ringing"
    ACCEPTED = "accepted"
    CONNECTED = "connected"
    ENDED = "ended"


class Event(StrEnum):
    ACCEPT = "accept"  # the callee answers (the device, or the nurse who takes an incoming call)
    DECLINE = "decline"
    MEDIA_UP = "media_up"  # both peers report their WebRTC connection up
    RECONNECT = "reconnect"  # a peer lost its media path: renegotiate without ringing again
    HANGUP_NURSE = "hangup_nurse"
    HANGUP_CLIENT = "hangup_client"
    RING_TIMEOUT = "ring_timeout"
    CONNECT_TIMEOUT = "connect_timeout"
    PEER_LOST_NURSE = "peer_lost_nurse"
    PEER_LOST_CLIENT = "peer_lost_client"
    UNREACHABLE = "unreachable"  # the ring could not be sent to the device
    SHUTDOWN = "shutdown"  # the signalling server stops


# The reason stored with an ended call, by the event that ended it.
_END_REASON: Final = {
    Event.DECLINE: "declined",
    Event.RING_TIMEOUT: "no_answer",
    Event.CONNECT_TIMEOUT: "connect_failed",
    Event.HANGUP_NURSE: "hangup_nurse",
    Event.HANGUP_CLIENT: "hangup_client",
    Event.PEER_LOST_NURSE: "peer_lost_nurse",
    Event.PEER_LOST_CLIENT: "peer_lost_client",
    Event.UNREACHABLE: "device_unreachable",
    Event.SHUTDOWN: "server_shutdown",
}
END_REASONS: Final = frozenset(_END_REASON.values())

_LIVE: Final = (CallState.RINGING, CallState.ACCEPTED, CallState.CONNECTED)
_ENDING_ANYWHERE: Final = (
    Event.HANGUP_NURSE,
    Event.HANGUP_CLIENT,
    Event.PEER_LOST_NURSE,
    Event.PEER_LOST_CLIENT,
    Event.SHUTDOWN,
)

# (state, event) -> next state. Anything not listed is illegal.
TRANSITIONS: Final[dict[tuple[CallState, Event], CallState]] = {
    (CallState.RINGING, Event.ACCEPT): CallState.ACCEPTED,
    (CallState.RINGING, Event.DECLINE): CallState.ENDED,
    (CallState.RINGING, Event.RING_TIMEOUT): CallState.ENDED,
    (CallState.RINGING, Event.UNREACHABLE): CallState.ENDED,
    (CallState.ACCEPTED, Event.MEDIA_UP): CallState.CONNECTED,
    (CallState.ACCEPTED, Event.CONNECT_TIMEOUT): CallState.ENDED,
    (CallState.CONNECTED, Event.RECONNECT): CallState.ACCEPTED,
    **{(state, event): CallState.ENDED for state in _LIVE for event in _ENDING_ANYWHERE},
}


class IllegalTransition(Exception):
    def __init__(self, state: CallState, event: Event) -> None:
        super().__init__(f"a call that is {state} cannot take {event}")
        self.state = state
        self.event = event


@dataclass(frozen=True, slots=True)
class Timeouts:
    """How long each phase may take. The defaults bound the detection of a vanished peer at 15 s."""

    # A phone rings about 30 s before voicemail; a care client may need longer to reach the tablet.
    ring_ms: int = 45_000
    # ICE + DTLS on a bad network; a TURN relay may add a few round trips.
    connect_ms: int = 20_000
    # Peers ping the signalling server every 3 s: three missed pings plus a margin means it is gone.
    liveness_ms: int = 10_000
    # A closed signalling socket may come back (network change, Wi-Fi to 4G) before we give up.
    reconnect_grace_ms: int = 8_000


@dataclass(frozen=True, slots=True)
class Call:
    """The state of one call. ``*_seen_ms`` is None until that side's signalling socket is up."""

    id: str
    direction: Literal["outbound", "inbound"]  # outbound: the care station calls the client
    kind: Literal["video", "monitoring"]
    state: CallState
    started_ms: int
    answered_ms: int | None = None
    connected_ms: int | None = None
    ended_ms: int | None = None
    end_reason: str | None = None
    phase_ms: int = 0  # when the current state began (the connect timeout runs from here)
    restarts: int = 0
    nurse_seen_ms: int | None = None
    client_seen_ms: int | None = None
    nurse_gone_ms: int | None = None  # the nurse's socket closed at; None while it is open
    client_gone_ms: int | None = None


def new_call(
    call_id: str,
    *,
    direction: Literal["outbound", "inbound"],
    kind: Literal["video", "monitoring"],
    now_ms: int,
) -> Call:
    return Call(call_id, direction, kind, CallState.RINGING, now_ms, phase_ms=now_ms)


def apply(call: Call, event: Event, now_ms: int) -> Call:
    """Return the call after ``event``; raise :class:`IllegalTransition` if the state does not allow it."""
    target = TRANSITIONS.get((call.state, event))
    if target is None:
        raise IllegalTransition(call.state, event)
    log.info("call %s: %s -> %s (%s)", call.id, call.state, target, event)
    changes: dict[str, object] = {"state": target, "phase_ms": now_ms}
    if event is Event.ACCEPT:
        changes["answered_ms"] = now_ms
    elif event is Event.MEDIA_UP and call.connected_ms is None:
        changes["connected_ms"] = now_ms
    elif event is Event.RECONNECT:
        changes["restarts"] = call.restarts + 1
    if target is CallState.ENDED:
        changes["ended_ms"] = now_ms
        changes["end_reason"] = _END_REASON[event]
    return dataclasses.replace(call, **changes)  # type: ignore[arg-type]


def seen(call: Call, side: Side, now_ms: int) -> Call:
    """Record a sign of life (a message or ping) from one side's signalling socket."""
    if side == "nurse":
        return dataclasses.replace(call, nurse_seen_ms=now_ms, nurse_gone_ms=None)
    return dataclasses.replace(call, client_seen_ms=now_ms, client_gone_ms=None)


def gone(call: Call, side: Side, now_ms: int) -> Call:
    """Record that one side's signalling socket closed; it has ``reconnect_grace_ms`` to come back."""
    if side == "nurse":
        return dataclasses.replace(call, nurse_gone_ms=now_ms)
    return dataclasses.replace(call, client_gone_ms=now_ms)


def due(call: Call, now_ms: int, timeouts: Timeouts) -> Event | None:
    """Return the timeout event that should be applied at ``now_ms``, if any."""
    if call.state is CallState.ENDED:
        return None
    for side, event in (("nurse", Event.PEER_LOST_NURSE), ("client", Event.PEER_LOST_CLIENT)):
        seen_ms = call.nurse_seen_ms if side == "nurse" else call.client_seen_ms
        gone_ms = call.nurse_gone_ms if side == "nurse" else call.client_gone_ms
        if seen_ms is None:
            continue
        if gone_ms is not None and now_ms - gone_ms >= timeouts.reconnect_grace_ms:
            return event
        if now_ms - seen_ms >= timeouts.liveness_ms:
            return event
    if call.state is CallState.RINGING and now_ms - call.phase_ms >= timeouts.ring_ms:
        return Event.RING_TIMEOUT
    if call.state is CallState.ACCEPTED and now_ms - call.phase_ms >= timeouts.connect_ms:
        return Event.CONNECT_TIMEOUT
    return None


@dataclass(frozen=True, slots=True)
class Quality:
    """A running summary of the nurse's WebRTC statistics samples (received video of the client)."""

    samples: int = 0
    fps_sum: float = 0.0
    fps_min: float | None = None
    loss_pct_max: float = 0.0
    rtt_ms_sum: float = 0.0
    rtt_samples: int = 0

    def add(self, *, fps: float, loss_pct: float, rtt_ms: float | None) -> Quality:
        """Return the summary with one more sample (values are clamped to sane ranges)."""
        fps = min(max(fps, 0.0), 240.0)
        loss_pct = min(max(loss_pct, 0.0), 100.0)
        return Quality(
            samples=self.samples + 1,
            fps_sum=self.fps_sum + fps,
            fps_min=fps if self.fps_min is None else min(self.fps_min, fps),
            loss_pct_max=max(self.loss_pct_max, loss_pct),
            rtt_ms_sum=self.rtt_ms_sum + (max(rtt_ms, 0.0) if rtt_ms is not None else 0.0),
            rtt_samples=self.rtt_samples + (rtt_ms is not None),
        )

    def summary(self) -> dict[str, float | int | None]:
        return {
            "samples": self.samples,
            "fps_mean": round(self.fps_sum / self.samples, 1) if self.samples else None,
            "fps_min": round(self.fps_min, 1) if self.fps_min is not None else None,
            "loss_pct_max": round(self.loss_pct_max, 2),
            "rtt_ms_mean": round(self.rtt_ms_sum / self.rtt_samples, 1) if self.rtt_samples else None,
        }
