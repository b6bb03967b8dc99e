"""The benchmark's set-up: databases, provisioned devices, the broker and service processes, measurements.

Everything here starts real parts the way an operator would (``carealarm gateway`` etc. as processes)
and cleans up after itself: databases are created and dropped, processes are ended by their own ids.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import create_engine, func, insert, select, text
from sqlalchemy.engine import make_url

from carealarm.broker import EmbeddedBroker
from devices.simulator.device import Credentials
from messaging.accounts import mosquitto_hash
from messaging.mqtt import MqttConfig
from storage.db import SessionFactory, make_engine, make_session_factory, upgrade
from storage.models import Client, Device, DeviceEvent
from storage.registry import add_device, add_user

__all__ = [
    "BENCH_USER",
    "Database",
    "Sampler",
    "Services",
    "free_port",
    "load_average",
    "machine",
    "provision",
]

PG_SERVER_URL = os.environ.get(
    "CAREALARM_BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
BENCH_USER = ("bench-nurse", "bench-nurse-password")
_CLK_TCK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def load_average() -> str:
    """The 1/5/15-minute load averages (other engineers share this machine: every figure carries it)."""
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f}"


def machine() -> dict[str, str]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_kb = 0
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem_kb = int(line.split()[1])
    mosq = subprocess.run(["/usr/sbin/mosquitto", "-h"], capture_output=True, text=True).stdout.splitlines()
    pg = "unknown"
    with contextlib.suppress(Exception):
        engine = create_engine(PG_SERVER_URL)
        with engine.connect() as conn:
            pg = str(conn.execute(text("SHOW server_version")).scalar())
        engine.dispose()
    import resource

    return {
        "cpu": f"{os.cpu_count()} x {cpu}",
        "memory": f"{mem_kb / 1024 / 1024:.1f} GiB",
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "mosquitto": mosq[0] if mosq else "?",
        "postgresql": pg,
        "sqlite": __import__("sqlite3").sqlite_version,
        "fd limit (hard)": str(resource.getrlimit(resource.RLIMIT_NOFILE)[1]),
    }


@dataclass
class Database:
    """A fresh database of one kind, migrated; dropped (PostgreSQL) or deleted (SQLite) by :meth:`drop`."""

    kind: str
    url: str
    workdir: Path

    @classmethod
    def create(cls, kind: str, workdir: Path) -> Database:
        workdir.mkdir(parents=True, exist_ok=True)
        if kind == "sqlite":
            url = f"sqlite:///{(workdir / 'carealarm.sqlite3').resolve()}"
        else:
            name = f"carealarm_bench_{uuid.uuid4().hex[:10]}"
            admin = create_engine(PG_SERVER_URL, isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
            admin.dispose()
            url = make_url(PG_SERVER_URL).set(database=name).render_as_string(hide_password=False)
        upgrade(url)
        return cls(kind, url, workdir)

    def sessions(self) -> SessionFactory:
        return make_session_factory(make_engine(self.url))

    def count_events(self, like: str) -> int:
        engine = make_engine(self.url)
        try:
            with engine.connect() as conn:
                return int(
                    conn.execute(
                        select(func.count()).select_from(DeviceEvent).where(DeviceEvent.msg_id.like(like))
                    ).scalar()
                    or 0
                )
        finally:
            engine.dispose()

    def drop(self) -> None:
        if self.kind == "sqlite":
            return  # lives in the report's work folder, removed with it
        name = make_url(self.url).database
        admin = create_engine(PG_SERVER_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def provision(db: Database, n_devices: int, n_probes: int) -> tuple[list[Credentials], list[Credentials]]:
    """Register ``n_devices`` fleet devices and ``n_probes`` alarm buttons (each its own client), and the
    console user; return their credentials (fleet, probes)."""
    from central.auth import hash_password

    now_ms = int(time.time() * 1000)
    sessions = db.sessions()
    fleet: list[Credentials] = []
    probes: list[Credentials] = []
    with sessions.begin() as session:
        add_user(
            session,
            username=BENCH_USER[0],
            display_name="Bench Nurse",
            role="care_nurse",
            password_hash=hash_password(BENCH_USER[1]),
            now_ms=now_ms,
        )
        total = n_devices + n_probes
        # One client per device, inserted in bulk (the registry's add_client flushes one row at a time).
        session.execute(
            insert(Client),
            [
                {"name": f"Bench client {i}", "address": "", "district": "bench", "created_ms": now_ms}
                for i in range(total)
            ],
        )
        client_ids = list(session.scalars(select(Client.id).order_by(Client.id)))
        # Fleet devices in bulk: 10,000 one-by-one registrations would dominate the bench's run time.
        # Every device still has its own password and its own PBKDF2 hash, as add_device would write.
        rows = []
        for i in range(n_devices):
            device_id = f"bench-{i:05d}"
            password = secrets.token_urlsafe(12)
            kind = "dispenser" if i % 3 == 0 else "alarm_button"
            rows.append(
                {
                    "id": device_id,
                    "client_id": client_ids[i],
                    "kind": kind,
                    "label": "bench",
                    "mqtt_password_hash": mosquitto_hash(password),
                    "created_ms": now_ms,
                }
            )
            fleet.append(Credentials(device_id, password, kind, f"Bench client {i}"))
        for start in range(0, len(rows), 2000):
            session.execute(insert(Device), rows[start : start + 2000])
        # The probes go through the registry's own path.
        for j in range(n_probes):
            device_id = f"probe-{j:03d}"
            _device, password = add_device(
                session,
                device_id=device_id,
                client_id=client_ids[n_devices + j],
                kind="alarm_button",
                label="probe",
                now_ms=now_ms,
            )
            probes.append(Credentials(device_id, password, "alarm_button", f"Bench client {n_devices + j}"))
    sessions.kw["bind"].dispose()
    return fleet, probes


@dataclass
class Services:
    """The embedded broker and ``carealarm gateway|monitor|central`` as separate processes."""

    db: Database
    workdir: Path
    broker: EmbeddedBroker | None = None
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    http_port: int = 0
    env: dict[str, str] = field(default_factory=dict)

    def start_broker(self) -> MqttConfig:
        from storage.registry import device_password_hashes

        sessions = self.db.sessions()
        with sessions() as session:
            hashes = device_password_hashes(session)
        sessions.kw["bind"].dispose()
        self.broker = EmbeddedBroker(self.workdir / "broker", free_port())
        self.broker.start(hashes)
        return MqttConfig.from_url(self.broker.url)

    def start(self, components: tuple[str, ...] = ("gateway", "monitor", "central")) -> None:
        assert self.broker is not None
        self.http_port = free_port()
        self.env = {
            **os.environ,
            "CAREALARM_DATABASE_URL": self.db.url,
            "CAREALARM_MQTT_URL": self.broker.url,
            "CAREALARM_DATA_DIR": str(self.workdir / "var"),
            "CAREALARM_HTTP_PORT": str(self.http_port),
            "CAREALARM_GATEWAY_NAME": f"bench-{uuid.uuid4().hex[:6]}",
            "PYTHONUNBUFFERED": "1",
        }
        exe = str(Path(sys.executable).with_name("carealarm"))
        for name in components:
            log = open(self.workdir / f"{name}.log", "ab")  # noqa: SIM115 - closed with the process
            self.procs[name] = subprocess.Popen([exe, name], env=self.env, stdout=log, stderr=log)
        if "central" in components:
            self._wait_http()
        time.sleep(1.5)  # the gateway's subscriptions and the monitor's first poll

    def start_process(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        log = open(self.workdir / f"{name}.log", "ab")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(args, env=self.env, stdout=log, stderr=log)
        self.procs[name] = proc
        return proc

    def _wait_http(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/livez", timeout=1) as r:
                    if r.status == 200:
                        return
            time.sleep(0.2)
        raise RuntimeError(f"central did not answer on port {self.http_port}; see {self.workdir}/central.log")

    def pids(self) -> dict[str, int]:
        out = {name: p.pid for name, p in self.procs.items() if p.poll() is None}
        if self.broker is not None and self.broker.process is not None:
            out["mosquitto"] = self.broker.process.pid
        return out

    def stop_process(self, name: str, timeout_s: float = 20) -> None:
        proc = self.procs.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def stop(self) -> None:
        for name in list(self.procs):
            self.stop_process(name)
        if self.broker is not None:
            self.broker.stop()

    def sign_in(self) -> str:
        """Sign the bench nurse in; return the session cookie header value."""
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.http_port}/api/session",
            data=json.dumps({"username": BENCH_USER[0], "password": BENCH_USER[1]}).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(req, timeout=10) as r:
            cookie = r.headers.get("Set-Cookie", "")
        return cookie.split(";", 1)[0]


def _proc_times(pid: int) -> tuple[float, int]:
    """(CPU seconds used, resident bytes) of one process."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    cpu = (int(fields[11]) + int(fields[12])) / _CLK_TCK
    rss = int(fields[21]) * _PAGE
    return cpu, rss


class Sampler:
    """CPU share and resident memory of named processes between :meth:`start` and :meth:`stop`."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self._t0 = 0.0
        self._cpu0: dict[str, float] = {}

    def start(self) -> None:
        self._t0 = time.monotonic()
        self._cpu0 = {}
        for name, pid in self.pids.items():
            with contextlib.suppress(OSError):
                self._cpu0[name] = _proc_times(pid)[0]

    def stop(self) -> dict[str, dict[str, float]]:
        """Per process: ``cpu_pct`` (100 = one core busy) and ``rss_mib``."""
        elapsed = time.monotonic() - self._t0
        out = {}
        for name, pid in self.pids.items():
            with contextlib.suppress(OSError):
                cpu, rss = _proc_times(pid)
                out[name] = {
                    "cpu_pct": round(100 * (cpu - self._cpu0.get(name, cpu)) / elapsed, 1),
                    "rss_mib": round(rss / 2**20, 1),
                }
        return out
