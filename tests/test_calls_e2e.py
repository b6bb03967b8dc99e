"""End to end on loopback: a nurse in headless Chromium (fake camera) and simulated video devices (aiortc)
through the real signalling server (uvicorn), the embedded Mosquitto carrying the ring, and SQLite.

aioice leaves 127.0.0.1 out of its candidates; the devices here gather loopback only
(devices.video.ice) and every ICE server list is empty, so nothing reaches out to the internet.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, free_port, wait_for
from sqlalchemy import select

from carealarm.broker import EmbeddedBroker
from central.app import CentralContext, create_app
from central.auth import hash_password
from central.calls.signalling import CallsConfig
from central.calls.state import Timeouts
from central.calls.store import record_consent
from central.feed import Broadcaster
from devices.video.endpoint import EndpointConfig
from devices.video.ice import use_loopback_candidates
from devices.video.runtime import VideoDevice
from messaging.mqtt import MqttConfig
from storage.calls_models import CallRecord
from storage.db import SessionFactory, make_engine, make_session_factory, upgrade
from storage.registry import add_client, add_device, add_user, device_password_hashes

pytestmark = pytest.mark.browser

playwright_api = pytest.importorskip(
    "playwright.sync_api", reason="BROWSER TESTS NOT RUN: playwright missing"
)

NOW = 1_800_000_000_000
# Chromium's fake camera and microphone, granted without a prompt, and ICE over loopback.
MEDIA_ARGS = [
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    "--allow-loopback-in-peer-connection",
    "--autoplay-policy=no-user-gesture-required",
]
ROOT = Path(__file__).resolve().parent.parent
# Short phases so the suite stays fast; the liveness bound is the production one (10 s, < 15 s).
TIMEOUTS = Timeouts(ring_ms=6_000, connect_ms=15_000, liveness_ms=10_000, reconnect_grace_ms=8_000)


@dataclass
class Client:
    id: int
    name: str
    device_id: str
    password: str


class Lab:
    """Central on a real uvicorn server, the embedded broker, and a SQLite database."""

    def __init__(self, tmp: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        db_url = f"sqlite:///{tmp / 'calls.sqlite3'}"
        upgrade(db_url)
        self.engine = make_engine(db_url)
        self.sessions: SessionFactory = make_session_factory(self.engine)
        self.clients: dict[str, Client] = {}
        with self.sessions.begin() as s:
            nurse = add_user(
                s,
                username="nurse",
                display_name="Anna de Vries",
                role="care_nurse",
                password_hash=hash_password("nurse-pw"),
                now_ms=NOW,
            )
            for key, name, auto, monitoring in (
                ("auto", "Mevr. Auto", True, True),
                ("button", "Dhr. Knop", False, False),
                ("hangup", "Mevr. Ophang", True, False),
                ("killed", "Dhr. Weg", True, False),
                ("caller", "Mevr. Beller", False, False),
            ):
                client = add_client(s, name=name, now_ms=NOW)
                device, password = add_device(
                    s, device_id=f"tv-{key}", client_id=client.id, kind="video", now_ms=NOW
                )
                record_consent(
                    s,
                    client_id=client.id,
                    monitoring_allowed=monitoring,
                    auto_answer=auto,
                    user_id=nurse.id,
                    now_ms=NOW,
                )
                self.clients[key] = Client(client.id, name, device.id, password)
            hashes = device_password_hashes(s)
        self.broker = EmbeddedBroker(tmp / "broker", free_port())
        self.broker.start(hashes)
        self.mqtt = MqttConfig.from_url(self.broker.url)
        broadcaster = Broadcaster(self.sessions, poll_interval_s=1.0)
        calls = CallsConfig(ice_servers=[], public_url=self.url, timeouts=TIMEOUTS, mqtt=self.mqtt)
        app = create_app(CentralContext(self.sessions, broadcaster, broadcaster.wake, calls=calls))
        import uvicorn

        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        wait_for(lambda: self.server.started, 15, what="uvicorn")

    def device(self, key: str) -> VideoDevice:
        c = self.clients[key]
        device = VideoDevice(
            EndpointConfig(c.device_id, c.password, self.url), MqttConfig(self.mqtt.host, self.mqtt.port)
        )
        device.start()
        assert device.connected.wait(10), "the video device did not subscribe to its cmd topic"
        return device

    def record(self, call_id: str) -> CallRecord:
        with self.sessions() as s:
            row = s.scalar(select(CallRecord).where(CallRecord.id == call_id))
            assert row is not None
            return row

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)
        self.broker.stop()
        self.engine.dispose()


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    use_loopback_candidates()
    lab = Lab(tmp_path_factory.mktemp("calls-e2e"))
    try:
        yield lab
    finally:
        lab.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"BROWSER TESTS NOT RUN: {CHROMIUM} missing (apt-get install chromium)")
    ARTIFACTS.mkdir(exist_ok=True)
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS + MEDIA_ARGS)
        yield b
        b.close()


def _nurse_page(browser: object, lab: Lab, query: str) -> object:
    context = browser.new_context(viewport={"width": 1100, "height": 900})  # type: ignore[attr-defined]
    response = context.request.post(
        f"{lab.url}/api/session", data={"username": "nurse", "password": "nurse-pw"}
    )
    assert response.ok, response.text()
    page = context.new_page()
    page.goto(f"{lab.url}/static/call.html?{query}")
    return page


def _probe(page: object) -> dict[str, object]:
    return page.evaluate("() => ({...window.callProbe})")  # type: ignore[attr-defined,no-any-return]


def _wait_state(page: object, state: str, timeout: float = 20) -> dict[str, object]:
    wait_for(lambda: _probe(page)["state"] == state, timeout, what=f"the call page to show {state}")
    return _probe(page)


def _sample_frames(page: object, device: VideoDevice, seconds: float) -> tuple[list[int], list[int]]:
    """Frames decoded by the browser and received by the device, once a second for ``seconds``."""
    browser_frames, device_frames = [], []
    for _ in range(int(seconds) + 1):
        browser_frames.append(int(page.evaluate("() => window.callFrames()")))  # type: ignore[attr-defined]
        device_frames.append(device.endpoint.sink.video_frames)
        time.sleep(1.0)
    return browser_frames, device_frames


def test_nurse_calls_device_and_video_flows_both_ways_at_a_sustained_rate(browser: object, lab: Lab) -> None:
    """A nurse's call is answered by the care plan's auto-answer; video flows both ways at >= 10 fps
    sustained over 10 s (no second without frames); hanging up is stored with duration and quality."""
    device = lab.device("auto")
    page = _nurse_page(browser, lab, f"client={lab.clients['auto'].id}")
    try:
        page.get_by_role("button", name="Video call").click()  # type: ignore[attr-defined]
        _wait_state(page, "connected")
        wait_for(lambda: _probe(page)["framesDecoded"] > 0, 15, what="the first decoded frame in the browser")
        browser_frames, device_frames = _sample_frames(page, device, 10)
        page.screenshot(path=str(ARTIFACTS / "call-connected.png"))  # type: ignore[attr-defined]
        for name, frames in (("browser", browser_frames), ("device", device_frames)):
            steps = [b - a for a, b in zip(frames, frames[1:], strict=False)]
            assert (frames[-1] - frames[0]) / 10 >= 10, f"{name} received {steps} frames per second"
            assert all(step > 0 for step in steps), f"{name} had a second without video: {steps}"
        assert device.endpoint.sink.audio_frames > 0, "no audio reached the device"
        probe = _probe(page)
        assert probe["firstFrameMs"] is not None and probe["clickMs"] is not None
        call_id = str(probe["callId"])

        page.get_by_role("button", name="Hang up").click()  # type: ignore[attr-defined]
        _wait_state(page, "ended")
        wait_for(lambda: device.endpoint.state == "idle", 10, what="the device to hang up")
        record = lab.record(call_id)
        assert record.end_reason == "hangup_nurse" and record.state == "ended"
        assert record.answered_ms and record.connected_ms and record.ended_ms
        assert record.ended_ms - record.connected_ms >= 10_000
        quality = json.loads(record.quality or "{}")
        assert quality["samples"] >= 3 and quality["fps_mean"] >= 10, quality
        timeline = page.request.get(f"{lab.url}/api/clients/{lab.clients['auto'].id}/calls").json()  # type: ignore[attr-defined]
        assert timeline[0]["id"] == call_id and timeline[0]["duration_s"] >= 10
    finally:
        page.context.close()  # type: ignore[attr-defined]
        device.stop()


def test_client_declines_with_the_button(browser: object, lab: Lab) -> None:
    """Without auto-answer the device rings; the client presses decline and the nurse sees why it ended."""
    device = lab.device("button")
    page = _nurse_page(browser, lab, f"client={lab.clients['button'].id}")
    try:
        page.get_by_role("button", name="Video call").click()  # type: ignore[attr-defined]
        wait_for(lambda: device.endpoint.state == "ringing", 10, what="the device to ring")
        device.decline()
        probe = _wait_state(page, "ended")
        assert probe["endReason"] == "declined"
        assert "declined" in page.inner_text("#status")  # type: ignore[attr-defined]
    finally:
        page.context.close()  # type: ignore[attr-defined]
        device.stop()


def test_unanswered_call_times_out(browser: object, lab: Lab) -> None:
    """Nobody presses answer: the call ends as no_answer at the ring timeout; the device stops ringing."""
    device = lab.device("button")
    page = _nurse_page(browser, lab, f"client={lab.clients['button'].id}")
    try:
        page.get_by_role("button", name="Video call").click()  # type: ignore[attr-defined]
        wait_for(lambda: device.endpoint.state == "ringing", 10, what="the device to ring")
        probe = _wait_state(page, "ended", timeout=30)
        assert probe["endReason"] == "no_answer"
        wait_for(lambda: device.endpoint.state == "idle", 10, what="the device to stop ringing")
        assert lab.record(str(probe["callId"])).end_reason == "no_answer"
    finally:
        page.context.close()  # type: ignore[attr-defined]
        device.stop()


def test_client_answers_with_the_button_then_hangs_up(browser: object, lab: Lab) -> None:
    """The client answers by the button, the call connects, then the client hangs up: the nurse's page ends
    with the client's hang-up as the reason."""
    device = lab.device("button")
    page = _nurse_page(browser, lab, f"client={lab.clients['button'].id}")
    try:
        page.get_by_role("button", name="Video call").click()  # type: ignore[attr-defined]
        wait_for(lambda: device.endpoint.state == "ringing", 10, what="the device to ring")
        device.answer()
        _wait_state(page, "connected")
        wait_for(lambda: device.endpoint.sink.video_frames > 0, 15, what="video at the device")
        device.hangup()
        probe = _wait_state(page, "ended")
        assert probe["endReason"] == "hangup_client"
        assert "The client hung up" in page.inner_text("#status")  # type: ignore[attr-defined]
    finally:
        page.context.close()  # type: ignore[attr-defined]
        device.stop()


def test_device_killed_mid_call_is_detected(browser: object, lab: Lab) -> None:
    """A device process killed (SIGKILL) in a connected call: central ends the call as peer_lost_client,
    within the 15 s bound of the liveness rules (generous wall-clock margin for a loaded machine)."""
    c = lab.clients["killed"]
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "devices.video",
            "--device-id",
            c.device_id,
            "--password",
            c.password,
            "--mqtt-url",
            f"mqtt://{lab.mqtt.host}:{lab.mqtt.port}",
            "--central-url",
            lab.url,
            "--loopback",
        ],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    page = _nurse_page(browser, lab, f"client={c.id}")
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert '"ready"' in line, line
        page.get_by_role("button", name="Video call").click()  # type: ignore[attr-defined]
        _wait_state(page, "connected", timeout=30)
        killed_at = time.monotonic()
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        probe = _wait_state(page, "ended", timeout=40)
        detected_s = time.monotonic() - killed_at
        assert probe["endReason"] == "peer_lost_client"
        record = lab.record(str(probe["callId"]))
        assert record.end_reason == "peer_lost_client"
        # The server's own clock: from the socket closing to the end is the 8 s reconnect grace.
        assert detected_s < 30, detected_s
        assert "no longer reachable" in page.inner_text("#status")  # type: ignore[attr-defined]
    finally:
        page.context.close()  # type: ignore[attr-defined]
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                pipe.close()


def test_client_initiated_call_is_taken_on_the_console(browser: object, lab: Lab) -> None:
    """The client calls the care station: the call is listed as incoming for the console, a nurse takes it
    and video flows; the nurse's hang-up ends it for the device too."""
    device = lab.device("caller")
    page = None
    try:
        device.call_care_station()
        context = browser.new_context()  # type: ignore[attr-defined]
        assert context.request.post(
            f"{lab.url}/api/session", data={"username": "nurse", "password": "nurse-pw"}
        ).ok

        def incoming() -> list[dict[str, object]]:
            calls = context.request.get(f"{lab.url}/api/calls/active").json()
            return [c for c in calls if c["direction"] == "inbound" and c["state"] == "ringing"]

        wait_for(incoming, 10, what="the incoming call on the console's list")
        call = incoming()[0]
        assert call["client_name"] == "Mevr. Beller"
        page = context.new_page()
        page.goto(f"{lab.url}/static/call.html?call={call['id']}")
        page.get_by_role("button", name="Take the call").click()
        _wait_state(page, "connected", timeout=30)
        wait_for(lambda: _probe(page)["framesDecoded"] > 0, 15, what="the client's video in the browser")
        wait_for(lambda: device.endpoint.sink.video_frames > 0, 15, what="the nurse's video at the device")
        page.get_by_role("button", name="Hang up").click()
        wait_for(lambda: device.endpoint.state == "idle", 10, what="the device to see the hang-up")
        assert device.endpoint.end_reason == "hangup_nurse"
        record = lab.record(str(call["id"]))
        assert record.direction == "inbound" and record.nurse_user_id is not None
    finally:
        if page is not None:
            page.context.close()
        device.stop()


def test_monitoring_with_consent_is_signalled_on_the_device(browser: object, lab: Lab) -> None:
    """With recorded consent a nurse looks in without the client answering; the device's monitoring
    indicator is on for the whole session and off after it; the session is on the audit timeline."""
    device = lab.device("auto")
    page = _nurse_page(browser, lab, f"client={lab.clients['auto'].id}")
    try:
        page.get_by_role("button", name="Look in (monitoring)").click()  # type: ignore[attr-defined]
        _wait_state(page, "connected")
        assert device.endpoint.monitoring_indicator is True
        wait_for(lambda: _probe(page)["framesDecoded"] > 0, 15, what="the home's video in the browser")
        assert page.is_visible("#monitoring-badge")  # type: ignore[attr-defined]
        page.get_by_role("button", name="Hang up").click()  # type: ignore[attr-defined]
        probe = _wait_state(page, "ended")
        wait_for(lambda: device.endpoint.monitoring_indicator is False, 10, what="the indicator to go off")
        record = lab.record(str(probe["callId"]))
        assert record.kind == "monitoring" and record.nurse_user_id is not None and record.ended_ms
        names = [name for _t, name, _d in device.endpoint.events]
        assert names.index("monitoring_indicator") < names.index("pc")
    finally:
        page.context.close()  # type: ignore[attr-defined]
        device.stop()
