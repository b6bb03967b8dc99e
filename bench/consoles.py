"""Benchmark: how many alerts per second reach 50 connected consoles, and the delay from a device's alarm
publish to the alert on every screen (p50/p95/p99).

`carealarm run` (embedded broker; SQLite, or PostgreSQL with --postgres) in a child process; 50 console
WebSockets signed in as nurses; alarms published over MQTT from distinct clients at a given rate.
Run: ``python -m bench.consoles [--consoles 50] [--rates 10,25,50] [--seconds 6] [--postgres]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import IO, Any

import paho.mqtt.client as paho
import websockets
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from central.auth import hash_password
from messaging.accounts import SERVICE_USER, service_password
from messaging.mqtt import MqttConfig, make_client
from storage.db import make_engine, make_session_factory, upgrade
from storage.registry import add_client, add_device, add_user

from .harness import free_port

PG_SERVER = os.environ.get("CAREALARM_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


def _seed(url: str, clients: int, consoles: int) -> None:
    upgrade(url)
    engine = make_engine(url)
    sessions = make_session_factory(engine)
    now = int(time.time() * 1000)
    with sessions.begin() as s:
        for i in range(clients):
            c = add_client(s, name=f"client-{i}", now_ms=now)
            add_device(s, device_id=f"b{i}", client_id=c.id, kind="alarm_button", now_ms=now, password="x")
        pw = hash_password("bench-password")
        for i in range(consoles):
            add_user(
                s,
                username=f"n{i}",
                display_name=f"Nurse {i}",
                role="care_nurse",
                password_hash=pw,
                now_ms=now,
            )
    engine.dispose()


def _cookie(http: int, user: str) -> str:
    req = urllib.request.Request(
        f"http://127.0.0.1:{http}/api/session",
        data=json.dumps({"username": user, "password": "bench-password"}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        return str(r.headers["set-cookie"]).split(";", 1)[0]


async def _console(
    http: int, cookie: str, seen: dict[str, list[float]], ready: asyncio.Event, stop: asyncio.Event
) -> None:
    async with websockets.connect(
        f"ws://127.0.0.1:{http}/api/live", additional_headers={"Cookie": cookie}, max_size=2**24
    ) as ws:
        while not stop.is_set():
            try:
                msg = json.loads(await asyncio.wait_for(ws.recv(), 0.5))
            except TimeoutError:
                continue
            now = time.time()
            if msg["type"] == "snapshot":
                ready.set()
            elif msg["type"] == "alert" and msg["alert"]["state"] == "open" and msg["alert"]["count"] == 1:
                seen.setdefault(msg["alert"]["client"]["name"], []).append(now)


async def measure(url: str, consoles: int, rates: list[int], seconds: float, workdir: Path) -> dict[str, Any]:
    total = sum(int(r * seconds) for r in rates)
    _seed(url, total, consoles)
    http, mqtt_port = free_port(), free_port()
    log = open(workdir / "run.log", "wb")  # noqa: SIM115 - closed below
    proc = _start_service(url, workdir, http, mqtt_port, log)
    try:
        await _wait_live(http)
        cookies = [_cookie(http, f"n{i}") for i in range(consoles)]
        seen: list[dict[str, list[float]]] = [{} for _ in range(consoles)]
        stop = asyncio.Event()
        readies = [asyncio.Event() for _ in range(consoles)]
        tasks = [
            asyncio.create_task(_console(http, c, seen[i], readies[i], stop)) for i, c in enumerate(cookies)
        ]
        await asyncio.wait_for(asyncio.gather(*(r.wait() for r in readies)), 60)
        client = _publisher(mqtt_port, workdir)
        sent, phases = await _press_alarms(client, rates, seconds)
        await asyncio.sleep(8)
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        client.disconnect()
        client.loop_stop()
        out = []
        for rate, first, last in phases:
            out.append(_phase_result(rate, [f"client-{i}" for i in range(first, last)], seen, sent))
            print(out[-1], flush=True)
        return {"phases": out, "load": os.getloadavg()}
    finally:
        proc.terminate()
        proc.wait(20)
        log.close()


def _start_service(
    url: str, workdir: Path, http: int, mqtt_port: int, log: IO[bytes]
) -> subprocess.Popen[bytes]:
    """`carealarm run` in a child process, on the given database and ports, its output into ``log``."""
    env = {
        **os.environ,
        "CAREALARM_DATABASE_URL": url,
        "CAREALARM_DATA_DIR": str(workdir),
        "CAREALARM_HTTP_PORT": str(http),
        "CAREALARM_EMBEDDED_MQTT_PORT": str(mqtt_port),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "carealarm.cli", "run"], env=env, stdout=log, stderr=subprocess.STDOUT
    )


async def _wait_live(http: int) -> None:
    """Wait until the service answers ``/livez`` (at most about a minute, then go on regardless)."""
    for _ in range(300):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{http}/livez", timeout=1).close()
            break
        except OSError:
            await asyncio.sleep(0.2)


def _publisher(mqtt_port: int, workdir: Path) -> paho.Client:
    """An MQTT client on the service's account, connected, its network loop running."""
    cfg = MqttConfig("127.0.0.1", mqtt_port, SERVICE_USER, service_password(workdir / "broker"))
    client, _ = make_client(cfg, f"bench-{uuid.uuid4().hex[:6]}")
    client.max_inflight_messages_set(1000)
    client.connect(cfg.host, cfg.port)
    client.loop_start()
    return client


async def _press_alarms(
    client: paho.Client, rates: list[int], seconds: float
) -> tuple[dict[str, float], list[tuple[int, int, int]]]:
    """Publish each rate's alarms for ``seconds``, each from its own device (b0, b1, ...).

    Returns when each client's alarm was sent, and per phase (rate, first device, device after the last).
    """
    sent: dict[str, float] = {}
    phases = []
    n = 0
    for rate in rates:
        first = n
        start = time.time()
        for k in range(int(rate * seconds)):
            target = start + k / rate
            await asyncio.sleep(max(0.0, target - time.time()))
            sent[f"client-{n}"] = time.time()
            client.publish(
                f"carealarm/v1/devices/b{n}/alarm",
                json.dumps({"msg_id": f"m{n}", "ts": int(time.time() * 1000)}),
                qos=1,
            )
            n += 1
        phases.append((rate, first, n))
    return sent, phases


def _phase_result(
    rate: int, names: list[str], seen: list[dict[str, list[float]]], sent: dict[str, float]
) -> dict[str, Any]:
    """How many of a phase's alerts reached the consoles, and how fast (p50/p95/p99)."""
    delays = sorted((s[name][0] - sent[name]) * 1000 for s in seen for name in names if name in s)
    delivered = sum(1 for s in seen for name in names if name in s)
    q = statistics.quantiles(delays, n=100) if len(delays) >= 2 else [float("nan")] * 99
    return {
        "alarms_per_s": rate,
        "consoles": len(seen),
        "delivered": delivered,
        "expected": len(seen) * len(names),
        "delay_ms_p50": round(q[49], 1),
        "delay_ms_p95": round(q[94], 1),
        "delay_ms_p99": round(q[98], 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="alerts per second to connected consoles")
    parser.add_argument("--consoles", type=int, default=50)
    parser.add_argument("--rates", default="10,25,50")
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--postgres", action="store_true")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    rates = [int(r) for r in args.rates.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        if not args.postgres:
            result = asyncio.run(
                measure(f"sqlite:///{tmp}/db.sqlite3", args.consoles, rates, args.seconds, Path(tmp))
            )
        else:
            name = f"carealarm_bench_{uuid.uuid4().hex[:8]}"
            admin = create_engine(PG_SERVER, isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
            try:
                url = make_url(PG_SERVER).set(database=name).render_as_string(hide_password=False)
                result = asyncio.run(measure(url, args.consoles, rates, args.seconds, Path(tmp)))
            finally:
                with admin.connect() as conn:
                    conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
                admin.dispose()
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
