"""The measurements: Mosquitto's own ceiling, durable ingest, alarm latency, offline detection, capacity.

Each returns plain data (dicts and lists) for the report; none asserts a goal.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from devices.simulator.device import Credentials, FleetStats, SimDevice
from devices.simulator.fleet import save_fleet
from devices.simulator.mqtt import MqttClient
from messaging.accounts import SERVICE_USER, service_password
from messaging.mqtt import MqttConfig
from storage.models import Device

from .harness import Database, Sampler, Services, free_port, load_average

__all__ = ["alarm_latency", "ingest", "mosquitto_ceiling", "offline_detection", "percentiles"]

MOSQUITTO = "/usr/sbin/mosquitto"
# A dose event as a dispenser sends it (what the ingest test stores), ~100 bytes.
_SAMPLE = json.dumps({"msg_id": "0f1e2d3c-123456", "ts": 1767225600000, "event": "taken", "dose_id": "d1-42"})
# The gateway limits each device to 5 messages/s (gateway/limits.py); the ingest devices stay below it.
_PER_DEVICE_INTERVAL_S = 0.25


def percentiles(values: list[float]) -> dict[str, float]:
    """p50/p95/p99/max/mean in milliseconds of latencies given in seconds."""
    if not values:
        return {}
    ms = sorted(v * 1000 for v in values)

    def pick(q: float) -> float:
        return round(ms[min(len(ms) - 1, int(q * len(ms)))], 1)

    return {
        "n": len(ms),
        "p50": pick(0.50),
        "p95": pick(0.95),
        "p99": pick(0.99),
        "max": round(ms[-1], 1),
        "mean": round(statistics.fmean(ms), 1),
    }


def _device_broker(cfg: MqttConfig) -> MqttConfig:
    return MqttConfig(cfg.host, cfg.port)


# -- 1. Mosquitto's own ceiling ------------------------------------------------------------------------
def mosquitto_ceiling(workdir: Path, total: int = 200_000, publishers: int = 4) -> dict[str, Any]:
    """QoS 1 messages/s through a bare Mosquitto with C clients (mosquitto_pub -l, mosquitto_sub)."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    conf = workdir / "ceiling.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\n"
        # unlimited queue: a subscriber that lags a moment must not lose messages (the default drops)
        "max_queued_messages 0\n" + ("user root\n" if os.geteuid() == 0 else "")
    )
    lines = workdir / "lines.txt"
    per = total // publishers
    lines.write_text((_SAMPLE + "\n") * per)
    broker = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stderr=subprocess.DEVNULL)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        time.sleep(0.5)
        load = load_average()
        sub = subprocess.Popen(
            ["mosquitto_sub", "-p", str(port), "-q", "1", "-t", "bench/#", "-C", str(per * publishers)],
            stdout=subprocess.DEVNULL,
        )
        procs.append(sub)
        time.sleep(0.5)
        sampler = Sampler({"mosquitto": broker.pid})
        sampler.start()
        started = time.monotonic()
        for i in range(publishers):
            with open(lines, "rb") as fh:
                procs.append(
                    subprocess.Popen(
                        ["mosquitto_pub", "-p", str(port), "-q", "1", "-t", f"bench/{i}", "-l"], stdin=fh
                    )
                )
        sub.wait(timeout=120)
        seconds = time.monotonic() - started
        cpu = sampler.stop()
        return {
            "messages": per * publishers,
            "seconds": round(seconds, 2),
            "rate": round(per * publishers / seconds),
            "publishers": publishers,
            "cpu": cpu,
            "load": load,
        }
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()
        broker.terminate()
        broker.wait()
        lines.unlink(missing_ok=True)


async def python_ceiling(
    workdir: Path, seconds: float = 8.0, clients: int = 40, window: int = 100
) -> dict[str, Any]:
    """QoS 1 PUBACKs/s the bench's own Python device client gets through a bare Mosquitto (sink: C)."""
    port = free_port()
    conf = workdir / "pyceiling.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\n"
        # unlimited queue: a subscriber that lags a moment must not lose messages (the default drops)
        "max_queued_messages 0\n" + ("user root\n" if os.geteuid() == 0 else "")
    )
    broker = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stderr=subprocess.DEVNULL)
    sub: subprocess.Popen[bytes] | None = None
    try:
        await asyncio.sleep(0.5)
        sub = subprocess.Popen(
            ["mosquitto_sub", "-p", str(port), "-q", "1", "-t", "bench/#"], stdout=subprocess.DEVNULL
        )
        await asyncio.sleep(0.3)
        payload = _SAMPLE.encode()
        acked = 0
        stop = False
        conns = [MqttClient(f"py-{i}") for i in range(clients)]
        for c in conns:
            await c.connect("127.0.0.1", port)

        async def pump(c: MqttClient, topic: str) -> None:
            nonlocal acked
            inflight: set[asyncio.Future[int]] = set()
            while not stop:
                while len(inflight) < window:
                    inflight.add(c.publish(topic, payload, qos=1))
                done, inflight = await asyncio.wait(inflight, return_when=asyncio.FIRST_COMPLETED)
                acked += len(done)

        load = load_average()
        sampler = Sampler({"mosquitto": broker.pid, "python client": os.getpid()})
        tasks = [asyncio.create_task(pump(c, f"bench/{i}")) for i, c in enumerate(conns)]
        await asyncio.sleep(1.0)
        sampler.start()
        a0, t0 = acked, time.monotonic()
        await asyncio.sleep(seconds)
        rate = (acked - a0) / (time.monotonic() - t0)
        cpu = sampler.stop()
        stop = True
        for t in tasks:
            t.cancel()
        for c in conns:
            c.abort()
        return {"rate": round(rate), "clients": clients, "window": window, "cpu": cpu, "load": load}
    finally:
        if sub is not None:
            sub.kill()
            sub.wait()
        broker.terminate()
        broker.wait()


# -- 2. Durable ingest -------------------------------------------------------------------------------
async def ingest(
    db: Database, services: Services, broker: MqttConfig, creds: list[Credentials], seconds: float = 20.0
) -> dict[str, Any]:
    """Devices send dose events as fast as the service acks them (each at most 4/s): stored/s, zero loss."""
    stats = FleetStats()
    load = _DoseLoad()
    devices = await _connect_devices(creds, broker, load.acked, stats)
    resender = asyncio.create_task(_resend_due(devices))
    load_before = load_average()
    tasks = [asyncio.create_task(load.device_loop(d, i)) for i, d in enumerate(devices)]
    await asyncio.sleep(3.0)  # warm-up
    sampler = Sampler({**services.pids(), "device load (python)": os.getpid()})
    sampler.start()
    series: list[tuple[float, int]] = []
    t0, a0 = time.monotonic(), stats.acked
    while time.monotonic() - t0 < seconds:
        await asyncio.sleep(1.0)
        series.append((round(time.monotonic() - t0, 2), stats.acked))
    rate = (stats.acked - a0) / (time.monotonic() - t0)
    cpu = sampler.stop()
    load_after = load_average()
    load.stop = True
    # Drain: every event sent must be acknowledged (devices resend) and stored exactly once.
    deadline = time.monotonic() + 60
    while sum(d.pending() for d in devices) and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
    for t in tasks:
        t.cancel()
    resender.cancel()
    pending = sum(d.pending() for d in devices)
    ack_p = percentiles(stats.ack_seconds.get("dose", [])[-20000:])
    await asyncio.gather(*(d.stop() for d in devices), return_exceptions=True)
    stored = _count_events(db, "dose")
    per_second = [b - a for (_, a), (_, b) in zip([(0.0, a0), *series[:-1]], series, strict=True)]
    return {
        "devices": len(devices),
        "rate": round(rate),
        "sent": load.sent,
        "acked": stats.acked,
        "stored": stored,
        "unacked_after_drain": pending,
        "lost": load.sent - stored,
        "resent": stats.resent,
        "per_second": per_second,
        "ack_latency_ms": ack_p,
        "cpu": cpu,
        "load": f"{load_before} -> {load_after}",
    }


class _DoseLoad:
    """Each device's dose events, one at a time: the next once the previous is acked (or after 30 s)."""

    def __init__(self) -> None:
        self.futures: dict[str, asyncio.Future[float]] = {}
        self.sent = 0
        self.stop = False

    def acked(self, msg_id: str, secs: float) -> None:
        fut = self.futures.pop(msg_id, None)
        if fut is not None and not fut.done():
            fut.set_result(secs)

    async def device_loop(self, d: SimDevice, n0: int) -> None:
        loop = asyncio.get_running_loop()
        n = 0
        while not self.stop:
            started = loop.time()
            n += 1
            fut: asyncio.Future[float] = loop.create_future()
            msg_id = d.dose_event("taken", f"b{n0}-{n}")
            self.futures[msg_id] = fut
            self.sent += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(fut), timeout=30)
            rest = _PER_DEVICE_INTERVAL_S - (loop.time() - started)
            if rest > 0:
                await asyncio.sleep(rest)


async def _connect_devices(
    creds: list[Credentials], broker: MqttConfig, acked: Callable[[str, float], None], stats: FleetStats
) -> list[SimDevice]:
    """Start a simulated device per credential; wait (at most 90 s) until they are all connected."""
    slots = asyncio.Semaphore(256)
    devices = [
        SimDevice(c, _device_broker(broker), on_acked=acked, stats=stats, connect_slots=slots) for c in creds
    ]
    for d in devices:
        d.start()
    deadline = time.monotonic() + 90
    while stats.connected < len(devices) and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    return devices


async def _resend_due(devices: list[SimDevice]) -> None:
    """Every second, have the devices resend the events whose ack is overdue (until cancelled)."""
    while True:
        await asyncio.sleep(1.0)
        now = time.monotonic()
        for d in devices:
            if d.pending():
                d.resend_due(now)


def _count_events(db: Database, kind: str) -> int:
    from sqlalchemy import func, select

    from storage.db import make_engine
    from storage.models import DeviceEvent

    engine = make_engine(db.url)
    try:
        with engine.connect() as conn:
            return int(
                conn.execute(
                    select(func.count()).select_from(DeviceEvent).where(DeviceEvent.kind == kind)
                ).scalar()
                or 0
            )
    finally:
        engine.dispose()


# -- 3. Alarm latency under a connected fleet ----------------------------------------------------------
def start_fleet(services: Services, broker: MqttConfig, fleet: list[Credentials], heartbeat_s: float) -> None:
    """`carealarm simulate` in its own process: the fleet sends heartbeats every ``heartbeat_s``."""
    fleet_file = services.workdir / "fleet.json"
    save_fleet(fleet_file, fleet)
    services.env["CAREALARM_MQTT_URL"] = f"mqtt://{broker.host}:{broker.port}"
    services.start_process(
        "simulator",
        [
            str(Path(sys.executable).with_name("carealarm")),
            "simulate",
            "--fleet",
            str(fleet_file),
            "--scenario",
            "heartbeats",
            "--heartbeat",
            str(heartbeat_s),
            "--seed",
            "7",
        ],
    )


def connected_clients(port: int) -> int:
    out = subprocess.run(
        ["ss", "-Htn", "state", "established", f"( sport = :{port} )"], capture_output=True, text=True
    ).stdout
    return sum(1 for line in out.splitlines() if line.strip())


async def wait_connected(port: int, n: int, timeout_s: float = 120) -> tuple[int, float]:
    started = time.monotonic()
    count = 0
    while time.monotonic() - started < timeout_s:
        count = connected_clients(port)
        if count >= n:
            break
        await asyncio.sleep(1.0)
    return count, time.monotonic() - started


def heartbeat_rate(services: Services) -> float | None:
    """Heartbeats/s the simulator reported over its last progress lines."""
    points = []
    with contextlib.suppress(OSError):
        for line in (services.workdir / "simulator.log").read_text().splitlines():
            parts = line.split()
            if len(parts) > 4 and parts[0].endswith("s") and "heartbeats" in parts:
                with contextlib.suppress(ValueError):
                    points.append(
                        (float(parts[0][:-1]), int(parts[parts.index("heartbeats") + 1].replace(",", "")))
                    )
    if len(points) < 2:
        return None
    (t0, h0), (t1, h1) = points[-2], points[-1]
    return round((h1 - h0) / (t1 - t0)) if t1 > t0 else None


async def alarm_latency(
    services: Services, cookie: str, probes: list[SimDevice], presses: int = 40
) -> dict[str, Any]:
    """Press alarms one after another; time each from the PUBLISH to (a) its ack, (b) the console."""
    from websockets.asyncio.client import connect

    to_console: list[float] = []
    to_stored: list[float] = []
    missed = 0
    url = f"ws://127.0.0.1:{services.http_port}/api/live"
    async with connect(url, additional_headers={"Cookie": cookie}, max_size=2**24, open_timeout=60) as ws:
        waiting: dict[str, tuple[float, asyncio.Future[float]]] = {}

        async def reader() -> None:
            async for raw in ws:
                message = json.loads(raw)
                if message.get("type") != "alert":
                    continue
                device = (message["alert"].get("device") or {}).get("id")
                entry = waiting.pop(device, None)
                if entry is not None and not entry[1].done():
                    entry[1].set_result(time.monotonic() - entry[0])

        first = json.loads(await asyncio.wait_for(ws.recv(), 60))
        if first.get("type") != "snapshot":
            raise RuntimeError(f"the console feed did not start with a snapshot: {first!r:.200}")
        read_task = asyncio.create_task(reader())
        load_before = load_average()
        sampler = Sampler({**services.pids(), "bench (probes, console)": os.getpid()})
        sampler.start()
        loop = asyncio.get_running_loop()
        for i in range(presses):
            probe = probes[i % len(probes)]
            stored: asyncio.Future[float] = loop.create_future()
            shown: asyncio.Future[float] = loop.create_future()
            probe.on_acked = lambda _m, s, f=stored: None if f.done() else f.set_result(s)
            waiting[probe.creds.device_id] = (time.monotonic(), shown)
            probe.press_alarm("button")
            try:
                to_console.append(await asyncio.wait_for(shown, 10))
                to_stored.append(await asyncio.wait_for(stored, 10))
            except TimeoutError:
                missed += 1
            await asyncio.sleep(0.25 + (i % 5) * 0.1)
        cpu = sampler.stop()
        read_task.cancel()
    return {
        "console_ms": percentiles(to_console),
        "stored_ms": percentiles(to_stored),
        "missed": missed,
        "raw_console_ms": [round(v * 1000, 1) for v in to_console],
        "cpu": cpu,
        "load": f"{load_before} -> {load_average()}",
    }


# -- 4. Offline detection --------------------------------------------------------------------------------
async def offline_detection(
    db: Database,
    broker: MqttConfig,
    workdir: Path,
    with_will: list[SimDevice],
    frozen: list[SimDevice],
    without_will: list[Credentials],
    wait_s: float = 25.0,
) -> dict[str, Any]:
    """Drop devices (with and without a Will) and freeze some; time the broker's Will and the database's
    ``online = false``."""
    from sqlalchemy import select

    watcher_seen: dict[str, float] = {}
    watcher = MqttClient(
        f"bench-watch-{os.getpid()}",
        username=SERVICE_USER,
        password=service_password(workdir / "broker"),
        on_message=lambda t, p, _q, r: (
            None if r or p != b"offline" else watcher_seen.setdefault(t.split("/")[3], time.monotonic())
        ),
    )
    await watcher.connect(broker.host, broker.port)
    await watcher.subscribe([("carealarm/v1/devices/+/status", 1)])
    # Devices without a Will: connected by hand (SimDevice always leaves one, as the protocol asks).
    bare = []
    for c in without_will:
        client = MqttClient(c.device_id, username=c.device_id, password=c.password, keepalive_s=30)
        await client.connect(broker.host, broker.port)
        client.publish(f"carealarm/v1/devices/{c.device_id}/status", b"online", qos=1, retain=True)
        bare.append(client)
    await asyncio.sleep(6)  # the gateway's liveness flush records them online
    load = load_average()
    t0 = time.monotonic()
    for d in with_will:
        d.drop(3600)
    for d in frozen:
        d.freeze(3600)
    for client in bare:
        client.abort()
    ids = {d.creds.device_id: "drop + Will" for d in with_will}
    ids |= {d.creds.device_id: f"freeze + Will (keep-alive {d.client.keepalive_s} s)" for d in frozen}
    ids |= {c.device_id: "drop, no Will" for c in without_will}
    db_seen: dict[str, float] = {}
    sessions = db.sessions()
    while time.monotonic() - t0 < wait_s and len(db_seen) < len(ids):
        with sessions() as session:
            for device_id, online in session.execute(
                select(Device.id, Device.online).where(Device.id.in_(list(ids)))
            ):
                if online is False and device_id not in db_seen:
                    db_seen[device_id] = time.monotonic()
        await asyncio.sleep(0.1)
    sessions.kw["bind"].dispose()
    await watcher.disconnect()
    out: dict[str, Any] = {"load": load, "waited_s": wait_s}
    for case in sorted(set(ids.values())):
        members = [d for d, c in ids.items() if c == case]
        will = [watcher_seen[d] - t0 for d in members if d in watcher_seen]
        stored = [db_seen[d] - t0 for d in members if d in db_seen]
        out[case] = {
            "devices": len(members),
            "will_published": len(will),
            "broker_will_ms": percentiles(will),
            "detected": len(stored),
            "db_offline_ms": percentiles(stored),
        }
    return out
