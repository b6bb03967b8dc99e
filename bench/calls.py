"""Video call benchmark: set-up time and frame rate of real calls, and how many calls signalling carries.

    .venv/bin/python bench/calls.py                       # everything, default sizes
    .venv/bin/python bench/calls.py --runs 10 --concurrent 100,300,600 --hold 20

Real parts throughout: the embedded Mosquitto, ``carealarm central`` as its own process (so its CPU can
be measured apart from the load generator), SQLite, Debian's headless Chromium with a fake camera and
the aiortc device endpoint with a synthetic camera, all on loopback with no ICE servers.

1. **Set-up time**: the nurse clicks "Video call" → the first frame of the client's video is presented
   in her browser (``requestVideoFrameCallback``), with an auto-answering device; ``--runs`` calls.
2. **Frame rate** over 10 s, both ways (browser decoded frames; frames the device received).
3. **Signalling capacity**: N simultaneous calls with scripted peers (no media: the media never passes
   central): ring over MQTT, accept, offer/answer/candidate, connected; then every peer pings every 3 s
   for ``--hold`` seconds. Reported: set-up latency, ping round trips, calls lost, central's CPU and RSS.

Figures go to stdout and to ``--out`` (JSON). Not part of the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import paho.mqtt.client as paho  # noqa: E402
import websockets  # noqa: E402

from carealarm.broker import EmbeddedBroker  # noqa: E402
from central.auth import hash_password  # noqa: E402
from central.calls.store import record_consent  # noqa: E402
from devices.video.endpoint import EndpointConfig  # noqa: E402
from devices.video.ice import use_loopback_candidates  # noqa: E402
from devices.video.runtime import VideoDevice  # noqa: E402
from messaging.mqtt import MqttConfig, make_client  # noqa: E402
from protocol.v1 import decode_command  # noqa: E402
from storage.db import make_engine, make_session_factory, upgrade  # noqa: E402
from storage.registry import add_client, add_device, add_user, device_password_hashes  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    "--allow-loopback-in-peer-connection",
    "--autoplay-policy=no-user-gesture-required",
]
NURSE = ("bench-nurse", "bench-nurse-pw")
FAKE_SDP = "v=0\r\n" + "a=x-bench:" + "x" * 3000 + "\r\n"  # a real offer is 3-6 kB


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1) if ordered else float("nan")


class Stack:
    """Broker, database with ``n_clients`` auto-answering video clients, and ``carealarm central``."""

    def __init__(self, workdir: Path, n_clients: int) -> None:
        self.workdir = workdir
        self.db_url = f"sqlite:///{workdir / 'carealarm.sqlite3'}"
        upgrade(self.db_url)
        self.engine = make_engine(self.db_url)
        sessions = make_session_factory(self.engine)
        self.devices: list[tuple[int, str, str]] = []  # (client id, device id, password)
        with sessions.begin() as s:
            nurse = add_user(
                s,
                username=NURSE[0],
                display_name="Bench Nurse",
                role="care_nurse",
                password_hash=hash_password(NURSE[1]),
                now_ms=0,
            )
            for i in range(n_clients):
                client = add_client(s, name=f"Client {i}", now_ms=0)
                device, password = add_device(
                    s, device_id=f"tv-{i:04d}", client_id=client.id, kind="video", now_ms=0
                )
                record_consent(
                    s,
                    client_id=client.id,
                    monitoring_allowed=False,
                    auto_answer=True,
                    user_id=nurse.id,
                    now_ms=0,
                )
                self.devices.append((client.id, device.id, password))
            hashes = device_password_hashes(s)
        self.broker = EmbeddedBroker(workdir / "broker", _free_port())
        self.broker.start(hashes)
        self.mqtt = MqttConfig.from_url(self.broker.url)
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {
            **os.environ,
            "CAREALARM_DATA_DIR": str(workdir),
            "CAREALARM_HTTP_PORT": str(self.port),
            "CAREALARM_EMBEDDED_MQTT_PORT": str(self.broker.port),
            "CAREALARM_ICE_SERVERS": "[]",
        }
        self.log = open(workdir / "central.log", "wb")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "carealarm.cli", "central"],
            cwd=ROOT,
            env=env,
            stdout=self.log,
            stderr=self.log,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.url}/livez", timeout=1):
                    break
            except OSError:
                time.sleep(0.2)
        else:
            raise SystemExit(f"central did not start: {(workdir / 'central.log').read_text()[-2000:]}")

    def cpu_s(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
        return float("nan")

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self.log.close()
        self.broker.stop()
        self.engine.dispose()


# -- 1 and 2: real calls through Chromium and aiortc ------------------------------------------------------


def media_bench(stack: Stack, runs: int) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    use_loopback_candidates()
    client_id, device_id, password = stack.devices[0]
    device = VideoDevice(
        EndpointConfig(device_id, password, stack.url), MqttConfig(stack.mqtt.host, stack.mqtt.port)
    )
    device.start()
    if not device.connected.wait(10):
        raise SystemExit("the video device did not connect to the broker")
    setup_ms: list[float] = []
    connected_ms: list[float] = []
    fps: dict[str, float] = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            for run in range(runs):
                context = browser.new_context()
                context.request.post(
                    f"{stack.url}/api/session", data={"username": NURSE[0], "password": NURSE[1]}
                )
                page = context.new_page()
                page.goto(f"{stack.url}/static/call.html?client={client_id}")
                page.wait_for_function("() => document.getElementById('call-btn').hidden === false")
                page.wait_for_function("() => document.getElementById('local').srcObject !== null")
                page.get_by_role("button", name="Video call").click()
                page.wait_for_function("() => window.callProbe.firstFrameMs !== null", timeout=30_000)
                page.wait_for_function("() => window.callProbe.state === 'connected'", timeout=30_000)
                probe = page.evaluate("() => ({...window.callProbe})")
                setup_ms.append(probe["firstFrameMs"] - probe["clickMs"])
                print(f"  call {run + 1}: click -> first remote frame {setup_ms[-1]:.0f} ms", flush=True)
                if run == runs - 1:
                    time.sleep(2)
                    b0, d0, t0 = (
                        page.evaluate("() => window.callFrames()"),
                        device.endpoint.sink.video_frames,
                        time.monotonic(),
                    )
                    time.sleep(10)
                    b1, d1, t1 = (
                        page.evaluate("() => window.callFrames()"),
                        device.endpoint.sink.video_frames,
                        time.monotonic(),
                    )
                    fps = {
                        "browser_receives_fps": round((b1 - b0) / (t1 - t0), 1),
                        "device_receives_fps": round((d1 - d0) / (t1 - t0), 1),
                    }
                page.get_by_role("button", name="Hang up").click()
                page.wait_for_function("() => window.callProbe.state === 'ended'")
                deadline = time.monotonic() + 10
                while device.endpoint.state != "idle" and time.monotonic() < deadline:
                    time.sleep(0.05)
                context.close()
        finally:
            browser.close()
            device.stop()
    return {
        "runs": runs,
        "setup_ms_median": round(statistics.median(setup_ms), 1),
        "setup_ms_min": round(min(setup_ms), 1),
        "setup_ms_max": round(max(setup_ms), 1),
        "setup_ms_all": [round(x, 1) for x in setup_ms],
        "source": "browser 320x240@20 fake camera; device 320x240@20 synthetic; VP8 both ways",
        **fps,
        **({"connected_ms": connected_ms} if connected_ms else {}),
    }


# -- 3: signalling capacity ------------------------------------------------------------------------------


class Rings:
    """The service's side of MQTT: catch every ring command so the scripted device learns its token."""

    def __init__(self, cfg: MqttConfig, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.waiting: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self.early: dict[str, dict[str, Any]] = {}
        self._client, _ = make_client(cfg, "bench-rings")
        self._subscribed = threading.Event()
        self._client.on_connect = lambda c, *_: c.subscribe("carealarm/v1/devices/+/cmd", qos=1)
        self._client.on_subscribe = lambda *_: self._subscribed.set()
        self._client.on_message = self._on_message
        self._client.connect(cfg.host, cfg.port)
        self._client.loop_start()
        if not self._subscribed.wait(10):
            raise SystemExit("could not subscribe to the ring commands")

    def _on_message(self, _c: paho.Client, _u: object, msg: paho.MQTTMessage) -> None:
        args = dict(decode_command(bytes(msg.payload)).args)
        self._loop.call_soon_threadsafe(self._deliver, args)

    def _deliver(self, args: dict[str, Any]) -> None:
        future = self.waiting.pop(args["call_id"], None)
        if future is None:
            self.early[args["call_id"]] = args
        elif not future.done():
            future.set_result(args)

    async def wait(self, call_id: str) -> dict[str, Any]:
        if call_id in self.early:
            return self.early.pop(call_id)
        future = self._loop.create_future()
        self.waiting[call_id] = future
        return await asyncio.wait_for(future, 30)

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


async def _until_state(ws: Any, states: tuple[str, ...]) -> dict[str, Any]:
    """Read until the call is in one of ``states`` (a hello after a late connect counts, as in the page)."""
    while True:
        message = json.loads(await asyncio.wait_for(ws.recv(), 60))
        if message["type"] in ("hello", "state") and message["call"]["state"] in states:
            return dict(message)
        if message["type"] == "ended":
            raise RuntimeError(f"call ended: {message['call']['end_reason']}")


async def _until(ws: Any, kind: str) -> dict[str, Any]:
    while True:
        message = json.loads(await asyncio.wait_for(ws.recv(), 60))
        if message["type"] == kind:
            return dict(message)
        if message["type"] == "ended":
            raise RuntimeError(f"call ended: {message['call']['end_reason']}")


async def _one_call(
    stack: Stack,
    http: httpx.AsyncClient,
    cookie: str,
    rings: Rings,
    client_id: int,
    hold_until: float,
    out: dict[str, list[float]],
) -> None:
    t0 = time.monotonic()
    response = await http.post(f"{stack.url}/api/calls", json={"client_id": client_id})
    response.raise_for_status()
    call_id = response.json()["id"]
    ws_base = stack.url.replace("http://", "ws://")

    async def keepalive(ws: Any) -> None:
        # As the real peers do from the moment their socket opens (the browser, the device).
        with contextlib.suppress(websockets.ConnectionClosed):
            while True:
                await asyncio.sleep(3.0)
                await ws.send(json.dumps({"type": "ping"}))

    async with websockets.connect(
        f"{ws_base}/api/calls/{call_id}/nurse", additional_headers={"Cookie": cookie}, ping_interval=None
    ) as nurse:
        nurse_alive = asyncio.create_task(keepalive(nurse))
        ring = await rings.wait(call_id)
        async with websockets.connect(f"{ws_base}/api/calls/{call_id}/device", ping_interval=None) as device:
            device_alive = asyncio.create_task(keepalive(device))
            await device.send(json.dumps({"type": "auth", "token": ring["token"]}))
            hello = await _until(device, "hello")
            assert hello["auto_answer"] is True
            await device.send(json.dumps({"type": "accept"}))
            await _until_state(nurse, ("accepted",))
            await nurse.send(json.dumps({"type": "offer", "sdp": FAKE_SDP}))
            for i in range(4):
                cand = f"candidate:{i} 1 udp 2122260223 127.0.0.1 {40000 + i} typ host"
                await nurse.send(
                    json.dumps({"type": "candidate", "candidate": cand, "sdpMid": "0", "sdpMLineIndex": 0})
                )
            await _until(device, "offer")
            await device.send(json.dumps({"type": "answer", "sdp": FAKE_SDP}))
            await _until(nurse, "answer")
            await nurse.send(json.dumps({"type": "media", "up": True}))
            await device.send(json.dumps({"type": "media", "up": True}))
            await _until_state(nurse, ("connected",))
            out["setup_ms"].append((time.monotonic() - t0) * 1000)
            nurse_alive.cancel()
            device_alive.cancel()

            async def pinger(ws: Any, offset: float) -> None:
                await asyncio.sleep(offset)
                while time.monotonic() < hold_until:
                    sent = time.monotonic()
                    await ws.send(json.dumps({"type": "ping"}))
                    await _until(ws, "pong")
                    out["ping_ms"].append((time.monotonic() - sent) * 1000)
                    await asyncio.sleep(3.0)

            await asyncio.gather(pinger(nurse, 0.0), pinger(device, 1.5))
            await nurse.send(json.dumps({"type": "hangup"}))
            ended = await _until(device, "ended")
            if ended["call"]["end_reason"] != "hangup_nurse":
                raise RuntimeError(ended["call"]["end_reason"])


async def capacity_bench(stack: Stack, n: int, hold_s: float, rate: float) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    rings = Rings(stack.mqtt, loop)
    out: dict[str, list[float]] = {"setup_ms": [], "ping_ms": []}
    try:
        async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=100)) as http:
            r = await http.post(f"{stack.url}/api/session", json={"username": NURSE[0], "password": NURSE[1]})
            r.raise_for_status()
            cookie = "; ".join(f"{k}={v}" for k, v in http.cookies.items())
            cpu0, own0, t0 = stack.cpu_s(), time.process_time(), time.monotonic()
            # Calls start at ``rate`` a second (a busy evening is far below that), then all are held together.
            hold_until = time.monotonic() + n / rate + hold_s
            tasks = []
            for i in range(n):
                tasks.append(
                    asyncio.create_task(
                        _one_call(stack, http, cookie, rings, stack.devices[i][0], hold_until, out)
                    )
                )
                await asyncio.sleep(1.0 / rate)
            results = await asyncio.gather(*tasks, return_exceptions=True)
            cpu1, own1, t1 = stack.cpu_s(), time.process_time(), time.monotonic()
            failures = [repr(r)[:120] for r in results if isinstance(r, BaseException)]
    finally:
        rings.close()
    return {
        "calls": n,
        "connected": len(out["setup_ms"]),
        "failed": len(failures),
        "failures_sample": failures[:3],
        "setup_ms_p50": _pct(out["setup_ms"], 0.5),
        "setup_ms_p95": _pct(out["setup_ms"], 0.95),
        "ping_rtt_ms_p50": _pct(out["ping_ms"], 0.5),
        "ping_rtt_ms_p95": _pct(out["ping_ms"], 0.95),
        "ping_rtt_ms_max": _pct(out["ping_ms"], 1.0),
        "central_cpu_pct": round(100 * (cpu1 - cpu0) / (t1 - t0), 1),
        "central_rss_mb": stack.rss_mb(),
        "load_generator_cpu_pct": round(100 * (own1 - own0) / (t1 - t0), 1),
        "start_rate_per_s": rate,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=5, help="real calls for the set-up time")
    parser.add_argument("--concurrent", default="50,200,500", help="simultaneous signalling-only calls")
    parser.add_argument("--hold", type=float, default=15.0, help="seconds all calls stay up, pinging")
    parser.add_argument("--rate", type=float, default=20.0, help="calls started per second")
    parser.add_argument("--skip-media", action="store_true")
    parser.add_argument("--out", type=Path, default=ROOT / "test-artifacts" / "bench-calls.json")
    args = parser.parse_args()
    sizes = [int(x) for x in args.concurrent.split(",") if x]
    report: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_before": os.getloadavg(),
        },
    }
    with tempfile.TemporaryDirectory(prefix="bench-calls-") as tmp:
        stack = Stack(Path(tmp), max(sizes + [1]))
        try:
            if not args.skip_media:
                print("set-up time and frame rate (Chromium <-> aiortc on loopback):", flush=True)
                report["media"] = media_bench(stack, args.runs)
                print(json.dumps(report["media"], indent=2), flush=True)
            report["signalling"] = []
            for n in sizes:
                print(f"signalling: {n} simultaneous calls, held {args.hold:.0f} s:", flush=True)
                result = asyncio.run(capacity_bench(stack, n, args.hold, args.rate))
                report["signalling"].append(result)
                print(json.dumps(result, indent=2), flush=True)
        finally:
            stack.close()
    report["machine"]["load_after"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
