"""Keep the embedded Mosquitto running: a pure supervision state machine, and the thread that drives it.

:func:`step` decides — is the broker up, when is the next restart due, how long to back off — from the state,
one event and ``now``; it never reads a clock or touches a process. :class:`Supervisor` is the edge: a thread
that reaps the child when it dies (no zombie), feeds :func:`step` and carries out what it says, and publishes
a :class:`BrokerHealth` snapshot for ``/healthz``, the console and the metrics.

Exceptions::

    ValueError
      └── IllegalTransition   an event that cannot happen in the current phase (a bug at the edge)
"""

from __future__ import annotations

import enum
import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Protocol

from .broker import EmbeddedBroker

__all__ = [
    "Action",
    "DEFAULT_BACKOFF",
    "Backoff",
    "BrokerChild",
    "BrokerHealth",
    "Child",
    "Event",
    "Exited",
    "IllegalTransition",
    "Phase",
    "Started",
    "StartFailed",
    "Stop",
    "Supervision",
    "Supervisor",
    "Tick",
    "describe_exit",
    "step",
]

log = logging.getLogger(__name__)


class IllegalTransition(ValueError):
    """An event that cannot happen in the supervisor's current phase."""


class Phase(enum.Enum):
    UP = "up"  # the child runs
    DOWN = "down"  # the child has died; a restart is due at ``retry_at`` (unless stopping)
    STARTING = "starting"  # the edge is starting it again


class Action(enum.Enum):
    NONE = "none"
    START = "start"  # start the child again, then report Started or StartFailed


@dataclass(frozen=True, slots=True)
class Exited:
    """The child has ended (and been reaped)."""

    reason: str


@dataclass(frozen=True, slots=True)
class Tick:
    """Time has passed."""


@dataclass(frozen=True, slots=True)
class Started:
    """A restart worked: the child runs (and listens) again."""


@dataclass(frozen=True, slots=True)
class StartFailed:
    """A restart did not work."""

    reason: str


@dataclass(frozen=True, slots=True)
class Stop:
    """We are shutting down: never restart again."""


Event = Exited | Tick | Started | StartFailed | Stop


@dataclass(frozen=True, slots=True)
class Backoff:
    """How long to wait before each restart."""

    # A broker that was healthy comes back within a second: devices retry every few seconds and lose nothing.
    first_s: float = 0.5
    # One that keeps dying (a corrupt persistence file, its port taken by someone else) is retried at least
    # every 10 s, so it is back soon after the cause is fixed, without a busy restart loop filling the log.
    max_s: float = 10.0
    # Up this long counts as healthy again: the next death waits first_s, not where the doubling had got to.
    stable_s: float = 30.0


DEFAULT_BACKOFF = Backoff()


@dataclass(frozen=True, slots=True)
class Supervision:
    """What the supervisor knows; ``since`` and ``retry_at`` are on the caller's clock."""

    phase: Phase
    since: float  # when the child came up, or when it went down
    restarts: int = 0  # successful restarts
    last_exit: str | None = None  # why the child last ended (or a restart last failed)
    delay_s: float = 0.0  # the back-off of the current (or the last) wait for a restart
    retry_at: float | None = None  # when the next restart is due (DOWN and not stopping)
    stopping: bool = False

    @classmethod
    def up(cls, now: float) -> Supervision:
        """A child that has just been started."""
        return cls(Phase.UP, since=now)


def _exited(s: Supervision, e: Event, now: float, b: Backoff) -> tuple[Supervision, Action]:
    assert isinstance(e, Exited)
    # A death soon after a (re)start doubles the back-off; a death after a stable spell starts it afresh.
    delay = b.first_s if now - s.since >= b.stable_s or s.delay_s == 0 else min(s.delay_s * 2, b.max_s)
    retry_at = None if s.stopping else now + delay
    return replace(
        s, phase=Phase.DOWN, since=now, last_exit=e.reason, delay_s=delay, retry_at=retry_at
    ), Action.NONE


def _due(s: Supervision, _e: Event, now: float, _b: Backoff) -> tuple[Supervision, Action]:
    if s.retry_at is None or now < s.retry_at:
        return s, Action.NONE
    return replace(s, phase=Phase.STARTING, retry_at=None), Action.START


def _idle(s: Supervision, _e: Event, _now: float, _b: Backoff) -> tuple[Supervision, Action]:
    return s, Action.NONE


def _started(s: Supervision, _e: Event, now: float, _b: Backoff) -> tuple[Supervision, Action]:
    return replace(s, phase=Phase.UP, since=now, restarts=s.restarts + 1), Action.NONE


def _start_failed(s: Supervision, e: Event, now: float, b: Backoff) -> tuple[Supervision, Action]:
    assert isinstance(e, StartFailed)
    # Still down since it died; the next try waits twice as long (the child never got to be stable).
    delay = min(s.delay_s * 2, b.max_s)
    retry_at = None if s.stopping else now + delay
    return replace(s, phase=Phase.DOWN, last_exit=e.reason, delay_s=delay, retry_at=retry_at), Action.NONE


def _stop(s: Supervision, _e: Event, _now: float, _b: Backoff) -> tuple[Supervision, Action]:
    return replace(s, stopping=True, retry_at=None), Action.NONE


_Handler = Callable[[Supervision, Event, float, Backoff], tuple[Supervision, Action]]
# Every legal (phase, event); anything else is refused. A child that is DOWN cannot exit, and only the edge's
# own START can lead to Started or StartFailed.
_TABLE: dict[tuple[Phase, type[Event]], _Handler] = {
    (Phase.UP, Exited): _exited,
    (Phase.UP, Tick): _idle,
    (Phase.UP, Stop): _stop,
    (Phase.DOWN, Tick): _due,
    (Phase.DOWN, Stop): _stop,
    (Phase.STARTING, Started): _started,
    (Phase.STARTING, StartFailed): _start_failed,
    (Phase.STARTING, Tick): _idle,
    (Phase.STARTING, Stop): _stop,
}


def step(
    state: Supervision, event: Event, now: float, backoff: Backoff = DEFAULT_BACKOFF
) -> tuple[Supervision, Action]:
    """Return the state after ``event`` at ``now`` and what the edge must do; refuse an illegal event."""
    handler = _TABLE.get((state.phase, type(event)))
    if handler is None:
        raise IllegalTransition(
            f"{type(event).__name__} cannot happen while the child is {state.phase.value}"
        )
    new, action = handler(state, event, now, backoff)
    if new.phase is not state.phase:
        log.debug("broker supervision %s -> %s", state.phase.value, new.phase.value)
    return new, action


def describe_exit(returncode: int) -> str:
    """Say why a child ended, from its ``Popen.returncode`` (negative: the signal that killed it)."""
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit code {returncode}"


@dataclass(frozen=True, slots=True)
class BrokerHealth:
    """The embedded broker as ``/healthz``, the console banner and the metrics see it."""

    up: bool
    since: float  # Unix time (s) it came up, or went down
    restarts: int  # times it was restarted after dying
    last_exit: str | None  # why it last died (or a restart last failed), e.g. "killed by SIGKILL"


class Child(Protocol):
    """A process the supervisor keeps running."""

    @property
    def pid(self) -> int | None: ...

    def poll(self) -> int | None:
        """Reap the process if it has ended; return its ``returncode``, or None while it runs."""

    def start(self) -> None:
        """Start it again and return once it serves; raise if it cannot."""

    def stop(self) -> None:
        """Stop it, if it runs, and reap it."""


@dataclass
class BrokerChild:
    """The embedded broker as a :class:`Child`; ``restart`` starts it again (with fresh credentials)."""

    broker: EmbeddedBroker
    restart: Callable[[], None]

    @property
    def pid(self) -> int | None:
        return self.broker.process.pid if self.broker.process is not None else None

    def poll(self) -> int | None:
        process = self.broker.process
        if process is None:
            raise RuntimeError("the broker was never started")
        return process.poll()

    def start(self) -> None:
        self.restart()

    def stop(self) -> None:
        self.broker.stop()


class Supervisor:
    """A thread that restarts the child when it dies; ``health`` says how it is doing.

    The child must be running when the supervisor starts. Call :meth:`stop_restarting` as soon as the process
    is asked to stop (the terminal's Ctrl+C reaches Mosquitto too: it must not come back), and :meth:`stop`
    at the end, once nothing needs the broker.
    """

    def __init__(
        self,
        child: Child,
        *,
        name: str = "embedded mosquitto",
        backoff: Backoff = DEFAULT_BACKOFF,
        poll_interval_s: float = 0.1,  # how soon a death is noticed; a waitpid(WNOHANG) costs nothing
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._child = child
        self._name = name
        self._backoff = backoff
        self._poll_interval_s = poll_interval_s
        self._monotonic = monotonic
        self._wall = wall
        self._state = Supervision.up(monotonic())
        self._health = self._snapshot()
        self._wake = threading.Event()
        self._stop_requested = False
        self._closing = False
        # Linux's parent-death signal, which the broker's child asks for, fires when the *thread* that started
        # it ends: this thread starts the restarted brokers, so it lives until stop() has stopped them.
        self._thread = threading.Thread(target=self._run, name=f"{name} supervisor", daemon=True)

    @property
    def health(self) -> BrokerHealth:
        """The broker's state now (an immutable snapshot, safe to read from any thread)."""
        return self._health

    def start(self) -> None:
        self._thread.start()

    def stop_restarting(self) -> None:
        """Never restart the child again (it keeps running if it runs)."""
        self._stop_requested = True
        self._wake.set()

    def stop(self, timeout_s: float = 15.0) -> None:
        """Stop restarting, stop the child and wait for the thread."""
        self._closing = True
        self.stop_restarting()
        if self._thread.is_alive():
            self._thread.join(timeout_s)
        else:
            self._child.stop()

    def _feed(self, event: Event) -> Action:
        now = self._monotonic()
        self._state, action = step(self._state, event, now, self._backoff)
        self._health = self._snapshot(now)
        return action

    def _snapshot(self, now: float | None = None) -> BrokerHealth:
        s = self._state
        since = self._wall() - ((self._monotonic() if now is None else now) - s.since)
        return BrokerHealth(up=s.phase is Phase.UP, since=since, restarts=s.restarts, last_exit=s.last_exit)

    def _run(self) -> None:
        try:
            while True:
                self._wake.clear()
                if self._stop_requested and not self._state.stopping:
                    self._feed(Stop())
                if self._closing:
                    break
                if self._state.phase is Phase.UP:
                    self._reap()
                if self._feed(Tick()) is Action.START:
                    self._restart()
                self._wake.wait(self._wait_s())
        except Exception:
            # Leave a running broker alone: unwatched is better than stopped.
            log.exception("%s supervisor failed; the broker is no longer watched", self._name)
            return
        pid = self._child.pid
        self._child.stop()
        if self._state.phase is Phase.UP:
            self._feed(Exited(f"stopped by carealarm (pid {pid})"))

    def _reap(self) -> None:
        pid = self._child.pid
        code = self._child.poll()
        if code is None:
            return
        reason = describe_exit(code)
        self._feed(Exited(reason))
        if self._state.stopping:
            log.info("%s (pid %s) ended while stopping: %s", self._name, pid, reason)
        else:
            log.error(
                "%s (pid %s) died: %s; restarting in %.1f s (%d restarts so far)",
                self._name,
                pid,
                reason,
                self._state.delay_s,
                self._state.restarts,
            )

    def _restart(self) -> None:
        down_since = self._state.since
        try:
            self._child.start()
        except Exception as exc:
            self._feed(StartFailed(f"restart failed: {exc}"))
            log.error("%s did not start again: %s; next try in %.1f s", self._name, exc, self._state.delay_s)
            return
        self._feed(Started())
        log.warning(
            "%s restarted (pid %s) after %.1f s down; restart %d",
            self._name,
            self._child.pid,
            self._state.since - down_since,
            self._state.restarts,
        )

    def _wait_s(self) -> float:
        retry_at = self._state.retry_at
        if retry_at is None:
            return self._poll_interval_s
        return max(0.0, min(self._poll_interval_s, retry_at - self._monotonic()))
