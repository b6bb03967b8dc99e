"""The embedded broker is supervised: a Mosquitto that dies is reaped, logged and restarted with back-off.

The decisions are a pure state machine driven here by a simulated clock; the thread at its edge is tested
with a fake child; and the real thing: `carealarm run` and `carealarm broker` as child processes, their
Mosquitto killed with SIGKILL, a device connecting again, and Ctrl+C stopping them promptly.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from helpers import free_port, wait_for
from hypothesis import given, settings
from hypothesis import strategies as st

from carealarm.supervise import (
    Action,
    Backoff,
    BrokerHealth,
    Exited,
    IllegalTransition,
    Phase,
    Started,
    StartFailed,
    Stop,
    Supervision,
    Supervisor,
    Tick,
    describe_exit,
    step,
)

B = Backoff(first_s=0.5, max_s=10.0, stable_s=30.0)


def _die_and_restart(state: Supervision, at: float) -> tuple[Supervision, float]:
    """The child dies at ``at`` and is started again as soon as the back-off allows; return the wait."""
    state, _ = step(state, Exited("killed by SIGKILL"), at, B)
    due = state.retry_at
    assert due is not None
    state, action = step(state, Tick(), due, B)
    assert action is Action.START
    state, _ = step(state, Started(), due, B)
    return state, due - at


# -- the pure state machine, on a simulated clock ------------------------------------------------------


def test_a_death_is_restarted_after_the_first_back_off() -> None:
    """A broker that dies is down from that moment, with the reason, and restarted 0.5 s later, not before."""
    state, action = step(Supervision.up(0.0), Exited("killed by SIGKILL"), 100.0, B)
    assert (state.phase, state.since, state.last_exit, action) == (
        Phase.DOWN,
        100.0,
        "killed by SIGKILL",
        Action.NONE,
    )
    assert step(state, Tick(), 100.49, B)[1] is Action.NONE
    state, action = step(state, Tick(), 100.5, B)
    assert (state.phase, action) == (Phase.STARTING, Action.START)
    state, _ = step(state, Started(), 100.6, B)
    assert (state.phase, state.since, state.restarts) == (Phase.UP, 100.6, 1)


def test_back_off_doubles_up_to_ten_seconds_while_it_keeps_dying() -> None:
    """A broker that dies again soon after each restart waits 0.5, 1, 2, 4, 8, then 10 s at most."""
    state, now, waits = Supervision.up(0.0), 1.0, []
    for _ in range(8):
        state, wait = _die_and_restart(state, now)
        waits.append(wait)
        now = state.since + 1.0  # up for a second only
    assert waits == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0]
    assert state.restarts == 8


def test_back_off_starts_afresh_after_a_stable_spell() -> None:
    """After 30 s up, the next death is restarted after 0.5 s again, however long the last wait was."""
    state, now = Supervision.up(0.0), 1.0
    for _ in range(5):
        state, _ = _die_and_restart(state, now)
        now = state.since + 1.0
    state, wait = _die_and_restart(state, state.since + 30.0)
    assert wait == 0.5


def test_a_failed_restart_waits_longer_and_keeps_the_time_it_went_down() -> None:
    """A restart that fails leaves the broker down since it died, with why, and doubles the wait."""
    state, _ = step(Supervision.up(0.0), Exited("exit code 1"), 50.0, B)
    state, _ = step(state, Tick(), 50.5, B)
    state, action = step(state, StartFailed("restart failed: port 1883 is already in use"), 50.7, B)
    assert (state.phase, state.since, action) == (Phase.DOWN, 50.0, Action.NONE)
    assert state.last_exit == "restart failed: port 1883 is already in use"
    assert state.retry_at == pytest.approx(51.7)


def test_after_stop_a_death_is_never_restarted() -> None:
    """Once stopping (Ctrl+C reaches Mosquitto too), a broker that ends stays down, however long we wait."""
    state, _ = step(Supervision.up(0.0), Stop(), 10.0, B)
    state, _ = step(state, Exited("exit code 0"), 10.01, B)
    assert (state.phase, state.retry_at, state.last_exit) == (Phase.DOWN, None, "exit code 0")
    for now in (10.5, 11.0, 100.0, 10_000.0):
        assert step(state, Tick(), now, B)[1] is Action.NONE


def test_stop_cancels_a_restart_already_due() -> None:
    """A stop during the back-off cancels the pending restart."""
    state, _ = step(Supervision.up(0.0), Exited("killed by SIGKILL"), 10.0, B)
    state, _ = step(state, Stop(), 10.2, B)
    assert step(state, Tick(), 11.0, B)[1] is Action.NONE


@pytest.mark.parametrize(
    ("state", "event"),
    [
        (Supervision(Phase.DOWN, since=0.0, retry_at=1.0), Exited("exit code 0")),
        (Supervision.up(0.0), Started()),
        (Supervision.up(0.0), StartFailed("x")),
        (Supervision(Phase.DOWN, since=0.0, retry_at=1.0), Started()),
        (Supervision(Phase.STARTING, since=0.0), Exited("exit code 0")),
    ],
)
def test_impossible_events_are_refused(state: Supervision, event: object) -> None:
    """An event that cannot happen in the phase (a child that is down cannot die) is refused loudly."""
    with pytest.raises(IllegalTransition):
        step(state, event, 5.0, B)  # type: ignore[arg-type]


_events = st.sampled_from(["exit", "tick", "start_ok", "start_fail", "stop"])


@settings(max_examples=300)
@given(st.lists(st.tuples(_events, st.floats(0.0, 40.0)), max_size=60))
def test_restarts_only_when_due_never_after_stop_waits_bounded(
    script: list[tuple[str, float]],
) -> None:
    """Whatever happens: a restart is started only once its back-off has passed and never after a stop, and
    every wait lies between 0.5 s and 10 s."""
    state, now, stopped = Supervision.up(0.0), 0.0, False
    for what, gap in script:
        now += gap
        event = {
            "exit": Exited("killed by SIGKILL"),
            "tick": Tick(),
            "start_ok": Started(),
            "start_fail": StartFailed("x"),
            "stop": Stop(),
        }[what]
        try:
            new, action = step(state, event, now, B)
        except IllegalTransition:
            continue
        if action is Action.START:
            assert not stopped and state.retry_at is not None and now >= state.retry_at
        if isinstance(event, Exited | StartFailed) and new.retry_at is not None:
            assert B.first_s - 1e-9 <= new.retry_at - now <= B.max_s + 1e-9
        stopped = stopped or isinstance(event, Stop)
        state = new


@pytest.mark.parametrize(
    ("code", "text"),
    [(-9, "killed by SIGKILL"), (-15, "killed by SIGTERM"), (1, "exit code 1"), (0, "exit code 0")],
)
def test_exit_reason_names_the_signal_or_code(code: int, text: str) -> None:
    """The logged reason says which signal killed the broker, or its exit code."""
    assert describe_exit(code) == text


# -- the edge: the supervising thread with a fake child ----------------------------------------------------


class FakeChild:
    """A child the test kills; ``start`` may be told to fail once."""

    def __init__(self) -> None:
        self.pid: int | None = 100
        self.code: int | None = None
        self.starts = 0
        self.stopped = False
        self.fail_next: str | None = None

    def poll(self) -> int | None:
        return self.code

    def start(self) -> None:
        if self.fail_next:
            reason, self.fail_next = self.fail_next, None
            raise RuntimeError(reason)
        self.starts += 1
        self.pid, self.code = 100 + self.starts, None

    def stop(self) -> None:
        self.stopped = True
        self.code = 0


def test_supervisor_thread_restarts_logs_and_reports_health(caplog: pytest.LogCaptureFixture) -> None:
    """The thread notices a death, logs why at ERROR, restarts (after a failed try) and publishes health."""
    child = FakeChild()
    sup = Supervisor(child, backoff=Backoff(first_s=0.01, max_s=0.05), poll_interval_s=0.005)
    caplog.set_level(logging.INFO, logger="carealarm.supervise")
    sup.start()
    try:
        assert sup.health.up and sup.health.restarts == 0 and sup.health.last_exit is None
        child.fail_next = "port 1883 is already in use"
        before = time.time()
        child.code = -signal.SIGKILL
        wait_for(lambda: sup.health.restarts == 1, 5, what="the restart")
        health = sup.health
        assert isinstance(health, BrokerHealth)
        assert health.up and health.since >= before
        assert health.last_exit == "restart failed: port 1883 is already in use"
        errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        assert any("pid 100" in m and "killed by SIGKILL" in m for m in errors), errors
        assert any("port 1883 is already in use" in m for m in errors), errors
    finally:
        sup.stop()
    assert child.stopped and not sup.health.up


# -- the real thing: carealarm run / carealarm broker and their Mosquitto ---------------------------------


class Carealarm:
    """`carealarm <command>` in a child process, started as a user would."""

    def __init__(self, tmp_path: Path, *args: str) -> None:
        self.data_dir = tmp_path / "var"
        self.mqtt_port = free_port()
        self.log_path = tmp_path / f"{args[0]}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in close()
        env = {
            **os.environ,
            "CAREALARM_DATA_DIR": str(self.data_dir),
            "CAREALARM_HTTP_PORT": str(free_port()),
            "CAREALARM_EMBEDDED_MQTT_PORT": str(self.mqtt_port),
            "CAREALARM_POLL_INTERVAL_S": "1.0",
        }
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "carealarm.cli", *args],
            cwd=tmp_path,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        wait_for(self._ready, 60, interval=0.1, what=f"carealarm {args[0]} (log: {self.log_path})")

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"carealarm exited with {self.proc.returncode}:\n{self.log()}")
        return "Ctrl+C stops" in self.log()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def mosquitto_pids(self) -> list[int]:
        """The Mosquitto processes whose parent is this carealarm (zombies included), from /proc."""
        pids = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                pid, rest = stat.read_text().split(" (", 1)
                comm, fields = rest.rsplit(") ", 1)
            except (OSError, ValueError):
                continue
            if comm == "mosquitto" and int(fields.split()[1]) == self.proc.pid:
                pids.append(int(pid))
        return pids

    def broker_pid(self) -> int:
        pids = self.mosquitto_pids()
        assert len(pids) == 1, f"expected one Mosquitto child, found {pids}"
        return pids[0]

    def interrupt(self) -> tuple[int, float]:
        """Send SIGINT (Ctrl+C); return the exit code and the seconds it took to exit."""
        t0 = time.monotonic()
        self.proc.send_signal(signal.SIGINT)
        code = self.proc.wait(timeout=30)
        return code, time.monotonic() - t0

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[..., Carealarm]]:
    """Start `carealarm <args>`; whatever still runs at the end of the test is killed."""
    started: list[Carealarm] = []

    def starter(*args: str) -> Carealarm:
        started.append(Carealarm(tmp_path, *args))
        return started[-1]

    yield starter
    for service in started:
        service.close()


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _dead(pid: int) -> bool:
    """The process has ended: reaped, or a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].startswith("Z")
    except OSError:
        return True


def _can_connect(port: int, user: str, password: str, client_id: str) -> bool:
    """A client connects with these credentials and has a QoS 1 message accepted (mosquitto_pub)."""
    payload = json.dumps({"msg_id": f"sup-{time.monotonic_ns()}", "ts": int(time.time() * 1000)})
    result = subprocess.run(
        ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(port), "-u", user, "-P", password, "-i", client_id]
        + ["-q", "1", "-t", f"carealarm/v1/devices/{user}/heartbeat", "-m", payload],
        capture_output=True,
        timeout=10,
    )
    return result.returncode == 0


def _seconds_until_connect(port: int, user: str, password: str, client_id: str, timeout: float) -> float:
    t0 = time.monotonic()
    while not _can_connect(port, user, password, client_id):
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"{user} could not connect for {timeout} s after the broker was killed")
        time.sleep(0.05)
    return time.monotonic() - t0


def test_run_restarts_a_killed_broker_and_devices_connect_again(start: Callable[..., Carealarm]) -> None:
    """kill -9 of the Mosquitto child of `carealarm run`: it is reaped (no zombie), the death is logged at
    ERROR with the signal, and a device with its own credentials connects again within seconds."""
    service = start("run", "--demo")
    device = json.loads((service.data_dir / "fleet.json").read_text())[0]
    creds = (service.mqtt_port, device["device_id"], device["password"], device["device_id"])
    assert _can_connect(*creds)
    old = service.broker_pid()

    os.kill(old, signal.SIGKILL)
    restart_s = _seconds_until_connect(*creds, timeout=20)

    print(f"\nrun: a device connects again {restart_s:.2f} s after kill -9 of its broker")
    assert restart_s < 5.0
    assert old not in service.mosquitto_pids(), "the killed broker was left a zombie"
    assert service.broker_pid() != old
    assert f"ERROR   carealarm.supervise: embedded mosquitto (pid {old}) died: killed by SIGKILL" in (
        service.log()
    )
    code, _ = service.interrupt()
    assert code == 0, service.log()[-3000:]


def test_ctrl_c_stops_run_promptly_after_its_broker_was_killed(start: Callable[..., Carealarm]) -> None:
    """As reported: the broker of `carealarm run` (simulated fleet running) is killed, then Ctrl+C (SIGINT):
    it exits with code 0 within 3 s (it ignored Ctrl+C for over 6 s) and leaves no broker behind."""
    service = start("run", "--demo", "--simulate", "--alarm-every", "3600")
    old = service.broker_pid()
    os.kill(old, signal.SIGKILL)
    # Ctrl+C once the broker listens again, or 3 s after the kill if it does not.
    deadline = time.monotonic() + 3.0
    while not (_dead(old) and _listening(service.mqtt_port)) and time.monotonic() < deadline:
        time.sleep(0.05)

    code, took = service.interrupt()

    print(f"\nrun: Ctrl+C after kill -9 of the broker exits in {took:.2f} s")
    assert code == 0, service.log()[-3000:]
    assert took < 3.0, service.log()[-3000:]
    assert not _listening(service.mqtt_port), "a broker outlived carealarm run"


def test_broker_command_restarts_a_killed_mosquitto(start: Callable[..., Carealarm]) -> None:
    """`carealarm broker` no longer exits without a word when its Mosquitto dies: it logs why at ERROR,
    restarts it (the service account connects again), and Ctrl+C still stops it with code 0."""
    broker = start("broker")
    password = (broker.data_dir / "broker" / "service.secret").read_text().strip()
    old = broker.broker_pid()

    os.kill(old, signal.SIGKILL)
    restart_s = _seconds_until_connect(broker.mqtt_port, "carealarm", password, "sup-test", timeout=20)

    print(f"\nbroker: the service account connects again {restart_s:.2f} s after kill -9")
    assert broker.proc.poll() is None, f"carealarm broker exited:\n{broker.log()}"
    assert f"embedded mosquitto (pid {old}) died: killed by SIGKILL" in broker.log()
    wait_for(lambda: "embedded mosquitto restarted (pid" in broker.log(), 5, what="the restart to be logged")
    code, took = broker.interrupt()
    assert code == 0 and took < 2.0, broker.log()
    assert not _listening(broker.mqtt_port), "a broker outlived carealarm broker"
