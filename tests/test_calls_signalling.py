"""Call signalling on a real database (SQLite and PostgreSQL): the REST API, the nurse's and the device's
WebSockets, relaying, every way a call ends, consent and the timeline. A fake ring sender stands in for
MQTT and a simulated clock drives the timeouts (tests/test_calls_e2e.py has the real broker and media)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from fastapi.testclient import TestClient
from helpers import wait_for
from sqlalchemy import select
from starlette.websockets import WebSocketDisconnect

from central.app import CentralContext, create_app
from central.auth import hash_password
from central.calls.signalling import CallHub, CallsConfig
from central.calls.state import Timeouts
from central.feed import Broadcaster
from protocol.v1 import decode_command
from storage.calls_models import CallRecord
from storage.commands_models import CommandRecord
from storage.db import SessionFactory
from storage.registry import add_client, add_device, add_user

NOW = 1_800_000_000_000
TIMEOUTS = Timeouts(ring_ms=30_000, connect_ms=20_000, liveness_ms=10_000, reconnect_grace_ms=8_000)


@dataclass
class World:
    api: TestClient
    sessions: SessionFactory
    client_id: int
    bare_client_id: int
    device_password: str
    rings: list[tuple[str, bytes]] = field(default_factory=list)
    clock: list[int] = field(default_factory=lambda: [NOW])
    ring_ok: list[bool] = field(default_factory=lambda: [True])

    @property
    def hub(self) -> CallHub:
        hub = self.api.app.state.ctx.calls_hub  # type: ignore[attr-defined]
        assert isinstance(hub, CallHub)
        return hub

    def advance(self, ms: int) -> None:
        """Move the simulated clock and let the hub apply whatever timeout is due."""
        self.clock[0] += ms
        self.api.portal.call(self.hub.tick)  # type: ignore[union-attr]

    def record(self, call_id: str) -> CallRecord:
        with self.sessions() as s:
            row = s.scalar(select(CallRecord).where(CallRecord.id == call_id))
            assert row is not None
            return row

    def last_ring(self) -> dict[str, Any]:
        device_id, payload = self.rings[-1]
        return {"device_id": device_id, **dict(decode_command(payload).args)}


@pytest.fixture
def world(sessions: SessionFactory) -> Iterator[World]:
    with sessions.begin() as s:
        # Her district: a district nurse acts on her own district's clients only (central.access).
        client = add_client(s, name="Mevr. Jansen", district="Zuid", now_ms=NOW)
        bare = add_client(s, name="Dhr. Zonder", now_ms=NOW)
        _, password = add_device(s, device_id="tv-1", client_id=client.id, kind="video", now_ms=NOW)
        add_device(s, device_id="btn-9", client_id=bare.id, kind="alarm_button", now_ms=NOW)
        for username, role in (
            ("nurse", "care_nurse"),
            ("nurse2", "care_nurse"),
            ("sup", "supervisor"),
            ("wijk", "district_nurse"),
        ):
            add_user(
                s,
                username=username,
                display_name=username.title(),
                role=role,
                district="Zuid" if role == "district_nurse" else "",
                password_hash=hash_password(f"{username}-pw"),
                now_ms=NOW,
            )
        client_id, bare_id = client.id, bare.id
    broadcaster = Broadcaster(sessions, poll_interval_s=0.5)
    ctx = CentralContext(sessions, broadcaster, broadcaster.wake)
    app = create_app(ctx)
    w = World(TestClient(app), sessions, client_id, bare_id, password)

    def ring(device_id: str, payload: bytes) -> bool:
        w.rings.append((device_id, payload))
        return w.ring_ok[0]

    # The ticker sleeps for an hour: only advance() moves time in these tests.
    ctx.calls = CallsConfig(
        ice_servers=[{"urls": ["stun:stun.example.org:3478"]}],
        public_url="http://central.example:8000",
        timeouts=TIMEOUTS,
        ring=ring,
        tick_s=3600,
        clock_ms=lambda: w.clock[0],
    )
    with w.api:
        yield w


def _sign_in(api: TestClient, username: str) -> None:
    response = api.post("/api/session", json={"username": username, "password": f"{username}-pw"})
    assert response.status_code == 200, response.text


def _start(w: World, kind: str = "video") -> dict[str, Any]:
    _sign_in(w.api, "nurse")
    response = w.api.post("/api/calls", json={"client_id": w.client_id, "kind": kind})
    assert response.status_code == 201, response.text
    return dict(response.json())


def _device_ws(w: World, call_id: str, token: str) -> Any:
    ws = w.api.websocket_connect(f"/api/calls/{call_id}/device")
    return ws


def _until(ws: Any, kind: str) -> dict[str, Any]:
    """Read messages until one of ``kind`` (skipping state updates and pongs)."""
    for _ in range(20):
        message = dict(ws.receive_json())
        if message["type"] == kind:
            return message
    raise AssertionError(f"no {kind} message")


def test_ring_command_carries_call_id_token_and_url(world: World) -> None:
    """Starting a call sends the device a valid protocol-v1 ring with call id, token and central's URL."""
    call = _start(world)
    ring = world.last_ring()
    assert ring["device_id"] == "tv-1" and ring["call_id"] == call["id"]
    assert ring["caller"] == "Nurse" and len(ring["token"]) >= 32
    assert ring["url"] == "http://central.example:8000"
    assert call["state"] == "ringing" and world.record(call["id"]).state == "ringing"


def test_the_ring_is_recorded_like_every_command_without_its_token(world: World) -> None:
    """The ring leaves the one way commands go (care.commands): recorded under the cmd_id the device sees,
    with the call id but never the token; a ring the broker did not take is recorded as not sent."""
    call = _start(world)
    ring = decode_command(world.rings[-1][1])
    with world.sessions() as s:
        row = s.get(CommandRecord, ring.cmd_id)
        assert row is not None and row.command == "ring" and row.device_id == "tv-1"
        assert json.loads(row.args)["call_id"] == call["id"] and "token" not in json.loads(row.args)
        assert row.result is None
    world.ring_ok[0] = False
    world.api.post("/api/calls", json={"client_id": world.client_id, "kind": "video"})
    with world.sessions() as s:
        assert s.get(CommandRecord, decode_command(world.rings[-1][1]).cmd_id).result == "not_sent"  # type: ignore[union-attr]


def test_each_side_gets_a_short_lived_turn_credential_of_its_own(world: World) -> None:
    """With a TURN secret, the nurse (config and hello) and the device (hello) each get a TURN credential that
    names them and expires within hours (coturn's REST-API scheme; tests/test_turn.py runs it on coturn);
    no long-term TURN password is handed out."""
    world.hub.config.ice_servers = [{"urls": ["turn:turn.example.org:3478"]}]
    world.hub.config.turn_secret = "shared-with-coturn"
    call = _start(world)
    token = world.last_ring()["token"]
    config = world.api.get("/api/calls/config").json()["ice_servers"][0]
    with world.api.websocket_connect(f"/api/calls/{call['id']}/nurse") as nurse:
        nurse_turn = _until(nurse, "hello")["ice_servers"][0]
        with _device_ws(world, call["id"], token) as device:
            device.send_json({"type": "auth", "token": token})
            device_turn = _until(device, "hello")["ice_servers"][0]
    expires_s = int(nurse_turn["username"].split(":")[0])
    assert 0 < expires_s - NOW // 1000 <= 24 * 3600
    assert nurse_turn["username"].endswith(":nurse-1") and config["username"].endswith(":nurse-1")
    assert (
        device_turn["username"].endswith(":device-tv-1")
        and device_turn["credential"] != nurse_turn["credential"]
    )


def test_device_with_a_wrong_token_is_refused(world: World) -> None:
    """A device socket that cannot show the ring's token is closed with 4401 and the call keeps ringing."""
    call = _start(world)
    with pytest.raises(WebSocketDisconnect) as info, _device_ws(world, call["id"], "x") as ws:
        ws.send_json({"type": "auth", "token": "not-the-token"})
        while True:
            ws.receive_json()
    assert info.value.code == 4401
    assert world.hub.calls[call["id"]].call.state == "ringing"


def test_signalling_relays_offer_answer_candidates_and_connects(world: World) -> None:
    """The device accepts, the offer, the answer and ICE candidates pass through unchanged, and the call is
    connected once both peers report media; the hellos carry the configured ICE servers."""
    call = _start(world)
    token = world.last_ring()["token"]
    with world.api.websocket_connect(f"/api/calls/{call['id']}/nurse") as nurse:
        hello = _until(nurse, "hello")
        assert hello["ice_servers"] == [{"urls": ["stun:stun.example.org:3478"]}]
        with _device_ws(world, call["id"], token) as device:
            device.send_json({"type": "auth", "token": token})
            device_hello = _until(device, "hello")
            assert device_hello["auto_answer"] is False and device_hello["call"]["kind"] == "video"
            device.send_json({"type": "accept"})
            assert _until(nurse, "state")["call"]["state"] == "accepted"
            nurse.send_json({"type": "offer", "sdp": "v=0 offer", "_user_id": 99})
            assert _until(device, "offer") == {"type": "offer", "sdp": "v=0 offer"}
            device.send_json({"type": "answer", "sdp": "v=0 answer"})
            assert _until(nurse, "answer")["sdp"] == "v=0 answer"
            candidate = {"type": "candidate", "candidate": "candidate:1 1 udp 1 127.0.0.1 5000 typ host"}
            nurse.send_json({**candidate, "sdpMid": "0", "sdpMLineIndex": 0})
            assert _until(device, "candidate") == {**candidate, "sdpMid": "0", "sdpMLineIndex": 0}
            nurse.send_json({"type": "media", "up": True})
            device.send_json({"type": "media", "up": True})
            assert _until(nurse, "state")["call"]["state"] == "connected"
            nurse.send_json({"type": "stats", "fps": 20, "loss_pct": 0.5, "rtt_ms": 3})
            nurse.send_json({"type": "hangup"})
            assert _until(device, "ended")["call"]["end_reason"] == "hangup_nurse"
    record = world.record(call["id"])
    assert record.state == "ended" and record.end_reason == "hangup_nurse"
    assert record.connected_ms is not None and record.quality and '"fps_mean":20.0' in record.quality


def test_device_declines(world: World) -> None:
    """The client presses decline: both sides hear ``declined`` and the record says so."""
    call = _start(world)
    token = world.last_ring()["token"]
    with world.api.websocket_connect(f"/api/calls/{call['id']}/nurse") as nurse:
        _until(nurse, "hello")
        with _device_ws(world, call["id"], token) as device:
            device.send_json({"type": "auth", "token": token})
            _until(device, "hello")
            device.send_json({"type": "decline"})
            assert _until(nurse, "ended")["call"]["end_reason"] == "declined"
    assert world.record(call["id"]).end_reason == "declined"


def test_a_decline_before_the_nurse_socket_is_heard_while_the_end_is_being_stored(world: World) -> None:
    """The client declines before the console's socket is open, and the end is still being written: the
    socket that arrives then hears ``ended: declined``, not "no such call" (CI saw "refused" here)."""
    import threading
    import time

    hub = world.hub
    release = threading.Event()
    write_row = hub._write_row

    def slow_write_row(*args: Any) -> None:
        release.wait(10)
        write_row(*args)

    hub._write_row = slow_write_row  # type: ignore[method-assign]
    release.set()  # the ring's own rows are written at once
    call = _start(world)
    token = world.last_ring()["token"]
    release.clear()
    try:
        with _device_ws(world, call["id"], token) as device:
            device.send_json({"type": "auth", "token": token})
            _until(device, "hello")
            device.send_json({"type": "decline"})
            deadline = time.monotonic() + 5
            while call["id"] in hub.calls and time.monotonic() < deadline:
                time.sleep(0.01)
            assert call["id"] not in hub.calls, "the decline was not applied"
            with world.api.websocket_connect(f"/api/calls/{call['id']}/nurse") as nurse:
                assert _until(nurse, "ended")["call"]["end_reason"] == "declined"
    finally:
        release.set()
    wait_for(lambda: world.record(call["id"]).end_reason == "declined", 5, what="the stored end")


def test_ring_times_out_without_an_answer(world: World) -> None:
    """Nobody answers: just before the ring timeout the call still rings, at it the call ends as no_answer."""
    call = _start(world)
    with world.api.websocket_connect(f"/api/calls/{call['id']}/nurse") as nurse:
        _until(nurse, "hello")
        for _ in range(5):  # the nurse's page keeps pinging while it rings
            world.clock[0] += 5_000
            nurse.send_json({"type": "ping"})
            _until(nurse, "pong")
        world.advance(TIMEOUTS.ring_ms - 25_000 - 1)
        assert world.hub.calls[call["id"]].call.state == "ringing"
        world.advance(1)
        assert _until(nurse, "ended")["call"]["end_reason"] == "no_answer"
    assert world.record(call["id"]).end_reason == "no_answer"


@pytest.mark.parametrize(("side", "reason"), [("nurse", "hangup_nurse"), ("device", "hangup_client")])
def test_hangup_from_either_side(world: World, side: str, reason: str) -> None:
    """Either side hangs up an accepted call: the other side hears it with the right reason."""
    call = _start(world)
    token = world.last_ring()["token"]
    with world.api.websocket_connect(f"/api/calls/{call['id']}/nurse") as nurse:
        _until(nurse, "hello")
        with _device_ws(world, call["id"], token) as device:
            device.send_json({"type": "auth", "token": token})
            _until(device, "hello")
            device.send_json({"type": "accept"})
            _until(nurse, "state")
            (nurse if side == "nurse" else device).send_json({"type": "hangup"})
            other = device if side == "nurse" else nurse
            assert _until(other, "ended")["call"]["end_reason"] == reason
    assert world.record(call["id"]).end_reason == reason


def test_device_socket_lost_ends_the_call_after_the_reconnect_grace(world: World) -> None:
    """The device's socket drops mid-call: within the grace the call lives on (a reconnect is possible);
    at the end of the grace it ends as peer_lost_client, well inside the 15 s bound."""
    call = _start(world)
    token = world.last_ring()["token"]
    with world.api.websocket_connect(f"/api/calls/{call['id']}/nurse") as nurse:
        _until(nurse, "hello")
        with _device_ws(world, call["id"], token) as device:
            device.send_json({"type": "auth", "token": token})
            _until(device, "hello")
            device.send_json({"type": "accept"})
            _until(nurse, "state")
        world.api.portal.call(lambda: _settle())  # type: ignore[union-attr]
        world.advance(TIMEOUTS.reconnect_grace_ms - 1)
        nurse.send_json({"type": "ping"})
        _until(nurse, "pong")
        world.advance(1)
        assert _until(nurse, "ended")["call"]["end_reason"] == "peer_lost_client"


async def _settle() -> None:
    """Let the server notice the closed socket."""
    import asyncio

    for _ in range(20):
        await asyncio.sleep(0.01)


def test_silent_peer_is_lost_after_the_liveness_timeout(world: World) -> None:
    """A nurse whose socket stays open but says nothing (a frozen laptop) is declared lost after 10 s."""
    call = _start(world)
    token = world.last_ring()["token"]
    with world.api.websocket_connect(f"/api/calls/{call['id']}/nurse") as nurse:
        _until(nurse, "hello")
        with _device_ws(world, call["id"], token) as device:
            device.send_json({"type": "auth", "token": token})
            _until(device, "hello")
            device.send_json({"type": "accept"})
            _until(device, "state")
            world.clock[0] += TIMEOUTS.liveness_ms - 2_000
            device.send_json({"type": "ping"})
            _until(device, "pong")
            world.advance(2_000)
            assert _until(device, "ended")["call"]["end_reason"] == "peer_lost_nurse"


def test_ring_that_cannot_be_sent_ends_as_unreachable(world: World) -> None:
    """When the broker cannot take the ring, the call ends at once as device_unreachable."""
    world.ring_ok[0] = False
    call = _start(world)
    assert call["state"] == "ended" and call["end_reason"] == "device_unreachable"


def test_client_without_a_video_device_cannot_be_called(world: World) -> None:
    """A client with only an alarm button gets 409 with a clear reason."""
    _sign_in(world.api, "nurse")
    response = world.api.post("/api/calls", json={"client_id": world.bare_client_id})
    assert response.status_code == 409 and "no video device" in response.json()["detail"]


def test_monitoring_is_refused_without_recorded_consent(world: World) -> None:
    """Monitoring without the client's recorded consent is refused (403) and nothing rings at the device;
    once a supervisor records consent it starts, and the session is on the client's timeline."""
    _sign_in(world.api, "nurse")
    response = world.api.post("/api/calls", json={"client_id": world.client_id, "kind": "monitoring"})
    assert response.status_code == 403 and "consent" in response.json()["detail"]
    assert world.rings == []
    assert world.api.get(f"/api/clients/{world.client_id}/calls").json() == []

    _sign_in(world.api, "sup")
    consent = {"monitoring_allowed": True, "auto_answer": False}
    assert world.api.put(f"/api/clients/{world.client_id}/video-consent", json=consent).status_code == 200
    stored = world.api.get(f"/api/clients/{world.client_id}/video-consent").json()
    assert stored["monitoring_allowed"] is True and stored["recorded_by"] is not None
    call = _start(world, "monitoring")
    assert call["kind"] == "monitoring" and world.rings
    timeline = world.api.get(f"/api/clients/{world.client_id}/calls").json()
    assert [(c["id"], c["kind"], c["nurse_name"]) for c in timeline] == [(call["id"], "monitoring", "Nurse")]


def test_only_some_roles_record_consent(world: World) -> None:
    """A care-station nurse may not record consent (403); a district nurse may."""
    body = {"monitoring_allowed": True, "auto_answer": True}
    _sign_in(world.api, "nurse")
    assert world.api.put(f"/api/clients/{world.client_id}/video-consent", json=body).status_code == 403
    _sign_in(world.api, "wijk")
    assert world.api.put(f"/api/clients/{world.client_id}/video-consent", json=body).status_code == 200


def test_client_initiated_call_is_offered_to_the_console_and_taken_once(world: World) -> None:
    """The device calls with its broker credentials; the console's feed lists it as incoming; the first nurse
    to take it gets it, a second nurse is refused."""
    _sign_in(world.api, "nurse")
    with world.api.websocket_connect("/api/calls/live") as feed:
        assert _until(feed, "calls")["calls"] == []
        with world.api.websocket_connect("/api/device/calls") as device:
            device.send_json({"type": "auth", "device_id": "tv-1", "password": world.device_password})
            hello = _until(device, "hello")
            call_id = hello["call"]["id"]
            listed = _until(feed, "calls")["calls"]
            assert [(c["id"], c["direction"], c["state"]) for c in listed] == [
                (call_id, "inbound", "ringing")
            ]
            with world.api.websocket_connect(f"/api/calls/{call_id}/nurse") as nurse:
                _until(nurse, "hello")
                nurse.send_json({"type": "take"})
                assert _until(nurse, "state")["call"]["nurse_name"] == "Nurse"
                assert _until(device, "state")["call"]["state"] == "accepted"
                other = TestClient(world.api.app)
                _sign_in(other, "nurse2")
                with (
                    pytest.raises(WebSocketDisconnect) as info,
                    other.websocket_connect(f"/api/calls/{call_id}/nurse") as ws2,
                ):
                    while True:
                        ws2.receive_json()
                assert info.value.code == 4404
                device.send_json({"type": "hangup"})
                assert _until(nurse, "ended")["call"]["end_reason"] == "hangup_client"
    record = world.record(call_id)
    assert record.direction == "inbound" and record.nurse_user_id is not None


def test_device_with_a_wrong_password_cannot_call(world: World) -> None:
    """A device that cannot prove its identity gets 4401 and no call is created."""
    with pytest.raises(WebSocketDisconnect) as info, world.api.websocket_connect("/api/device/calls") as ws:
        ws.send_json({"type": "auth", "device_id": "tv-1", "password": "wrong"})
        while True:
            ws.receive_json()
    assert info.value.code == 4401
    assert world.hub.calls == {}


def test_signed_out_browser_gets_no_signalling(world: World) -> None:
    """Neither a call's signalling nor the calls feed is open to a browser that is not signed in."""
    call = _start(world)
    anonymous = TestClient(world.api.app)
    for path in (f"/api/calls/{call['id']}/nurse", "/api/calls/live"):
        with pytest.raises(WebSocketDisconnect) as info, anonymous.websocket_connect(path) as ws:
            while True:
                ws.receive_json()
        assert info.value.code == 4401
