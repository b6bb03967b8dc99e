"""The device side of a video call: signalling socket to central, one aiortc peer connection per attempt.

The nurse's browser always makes the offer; the device answers it. For a ring the device opens
``/api/calls/{id}/device`` with the ring's token; to call the care station it opens ``/api/device/calls``
with its broker credentials. Either way it then pings every few seconds, so central notices a vanished
device within its liveness bound, and reconnects the socket after a network change.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import websockets
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack
from aiortc.sdp import candidate_from_sdp
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from .media import FrameSink, SyntheticCamera, SyntheticMicrophone

__all__ = ["EndpointConfig", "VideoEndpoint"]

log = logging.getLogger(__name__)

# Central ends a call whose peer is silent for 10 s; three pings fit in that.
PING_S = 3.0
# Central waits 8 s for a closed socket to come back; try to be back well within that.
RECONNECT_FOR_S = 7.0
# Central closed the socket on purpose: 1000 the call ended, 4401 refused, 4404 unknown, 4409 replaced.
_FINAL_CLOSE_CODES = frozenset({1000, 4401, 4404, 4409})


@dataclass(frozen=True)
class EndpointConfig:
    device_id: str
    password: str
    central_url: str  # http(s)://host:port of central; a ring's ``url`` takes precedence
    # The device lets central's care plan decide about answering by itself (a local kill switch if False).
    allow_auto_answer: bool = True
    camera_fps: int = 20


def _ws_url(base: str, path: str) -> str:
    base = base.rstrip("/")
    if base.startswith("https://"):
        base = "wss://" + base[len("https://") :]
    elif base.startswith("http://"):
        base = "ws://" + base[len("http://") :]
    return base + path


class VideoEndpoint:
    """One device's call handling, on one asyncio loop. ``state``: idle | connecting | ringing | in_call."""

    def __init__(self, config: EndpointConfig, on_event: Callable[[str, dict[str, Any]], None] | None = None):
        self.config = config
        self._on_event = on_event
        self.state = "idle"
        self.call_id: str | None = None
        self.call_kind: str | None = None
        self.end_reason: str | None = None
        self.monitoring_indicator = False  # the visible "someone is looking in" light on the device
        self.sink = FrameSink()
        self.events: list[tuple[float, str, dict[str, Any]]] = []
        self._ws: ClientConnection | None = None
        self._base = config.central_url
        self._token: str | None = None
        self._ice: list[dict[str, Any]] = []
        self._pc: RTCPeerConnection | None = None
        self._pending: list[dict[str, Any]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._ended = asyncio.Event()
        self._dropped_at: float | None = None

    # -- what the buttons and the MQTT ring do ------------------------------------------------------------

    async def ring(self, call_id: str, token: str, url: str | None = None) -> None:
        """A ring command arrived: join the call's signalling (busy: decline it)."""
        if self.state != "idle":
            await self._decline_busy(call_id, token, url or self._base)
            return
        self._start(call_id, token, url or self.config.central_url)
        self.state = "connecting"  # it rings once central confirms the call (hello)
        self._emit("ring", {"call_id": call_id})
        ws = await self._connect(f"/api/calls/{call_id}/device", {"type": "auth", "token": token})
        if ws is None:
            await self._finish("could not reach central")
            return
        self._spawn(self._read_loop())

    async def call_care_station(self) -> None:
        """The client presses "call the care station"."""
        if self.state != "idle":
            raise RuntimeError(f"the device is {self.state}")
        self._start(None, None, self.config.central_url)
        self.state = "in_call"
        auth = {"type": "auth", "device_id": self.config.device_id, "password": self.config.password}
        ws = await self._connect("/api/device/calls", auth)
        if ws is None:
            await self._finish("could not reach central")
            return
        self._spawn(self._read_loop())

    async def answer(self) -> None:
        if self.state == "ringing":
            self.state = "in_call"
            await self._send({"type": "accept"})

    async def decline(self) -> None:
        if self.state == "ringing":
            await self._send({"type": "decline"})

    async def hangup(self) -> None:
        if self.state != "idle":
            await self._send({"type": "hangup"})

    async def wait_ended(self) -> None:
        await self._ended.wait()

    async def close(self) -> None:
        if self.state != "idle":
            await self.hangup()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ended.wait(), 3)
        await self._finish(self.end_reason or "closed")

    # -- signalling -----------------------------------------------------------------------------------

    def _start(self, call_id: str | None, token: str | None, base: str) -> None:
        self.call_id, self._token, self._base = call_id, token, base
        self.end_reason = None
        self._ended = asyncio.Event()
        self._pending = []
        self._dropped_at = None

    async def _connect(self, path: str, auth: dict[str, Any]) -> ClientConnection | None:
        try:
            ws = await websockets.connect(_ws_url(self._base, path), open_timeout=5, ping_interval=None)
            await ws.send(json.dumps(auth))
        except (OSError, TimeoutError, websockets.InvalidHandshake, ConnectionClosed) as exc:
            log.warning("device %s: signalling unreachable: %r", self.config.device_id, exc)
            return None
        self._ws = ws
        return ws

    async def _read_loop(self) -> None:
        pinger = asyncio.create_task(self._ping_loop())
        try:
            while not self._ended.is_set():
                ws = self._ws
                if ws is None:
                    break
                try:
                    async for raw in ws:
                        await self._handle(json.loads(raw))
                        if self._ended.is_set():
                            break
                except ConnectionClosed:
                    pass
                except Exception:
                    log.exception("device %s: signalling failed", self.config.device_id)
                if self._ended.is_set():
                    break
                if ws.close_code in _FINAL_CLOSE_CODES:  # refused or replaced: trying again cannot help
                    await self._finish(f"refused by central ({ws.close_code} {ws.close_reason})")
                elif not await self._reconnect():
                    await self._finish("signalling lost")
        finally:
            pinger.cancel()

    async def _reconnect(self) -> bool:
        """The socket dropped without an end (network change): get back into the call with the token.

        The time allowed runs from the first drop; only a ``hello`` (central took us back) resets it.
        """
        if self.call_id is None or self._token is None:
            return False
        if self._dropped_at is None:
            self._dropped_at = time.monotonic()
        deadline = self._dropped_at + RECONNECT_FOR_S
        while time.monotonic() < deadline:
            path = f"/api/calls/{self.call_id}/device"
            if await self._connect(path, {"type": "auth", "token": self._token}) is not None:
                self._emit("signalling_reconnected", {})
                return True
            await asyncio.sleep(0.5)
        return False

    async def _ping_loop(self) -> None:
        while True:
            await asyncio.sleep(PING_S)
            await self._send({"type": "ping"})

    async def _send(self, message: dict[str, Any]) -> None:
        if self._ws is not None:
            with contextlib.suppress(ConnectionClosed):
                await self._ws.send(json.dumps(message))

    async def _handle(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == "hello":
            await self._hello(message)
        elif kind == "state":
            self._emit("state", {"state": message["call"]["state"]})
            if message.get("reconnect"):
                await self._close_pc()  # the nurse's page sends a fresh offer next
        elif kind == "offer":
            await self._offer(str(message.get("sdp", "")))
        elif kind == "candidate":
            await self._candidate(message)
        elif kind == "ended":
            await self._finish(str(message["call"].get("end_reason") or "ended"))
        elif kind == "error":
            log.warning("device %s: central says: %s", self.config.device_id, message.get("detail"))

    async def _hello(self, message: dict[str, Any]) -> None:
        self._dropped_at = None
        call = message["call"]
        self.call_id, self.call_kind = call["id"], call["kind"]
        self._ice = list(message.get("ice_servers") or [])
        if isinstance(message.get("token"), str):
            self._token = message["token"]
        self._emit("hello", {"call_id": call["id"], "state": call["state"]})
        if call["state"] != "ringing" or call["direction"] != "outbound":
            return
        if call["kind"] == "monitoring":
            # Monitoring is never silent: the indicator is on before any video leaves the house.
            self.monitoring_indicator = True
            self._emit("monitoring_indicator", {"on": True})
            self.state = "in_call"
            await self._send({"type": "accept"})
        elif message.get("auto_answer") and self.config.allow_auto_answer:
            self.state = "in_call"
            await self._send({"type": "accept"})
        else:
            self.state = "ringing"  # the bell and the answer/decline buttons
            self._emit("ringing", {"call_id": call["id"], "caller": message["call"].get("nurse_name")})

    # -- WebRTC ---------------------------------------------------------------------------------------

    def _new_pc(self) -> RTCPeerConnection:
        servers = [
            RTCIceServer(urls=s["urls"], username=s.get("username"), credential=s.get("credential"))
            for s in self._ice
        ]
        # An explicit (possibly empty) list: aiortc's default would reach out to a public STUN server.
        pc = RTCPeerConnection(RTCConfiguration(iceServers=servers))

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            self.sink.play(track)

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            if pc is not self._pc:
                return
            self._emit("pc", {"state": pc.connectionState})
            if pc.connectionState == "connected":
                await self._send({"type": "media", "up": True})
            elif pc.connectionState == "failed":
                await self._send({"type": "reconnect"})

        pc.addTrack(SyntheticCamera(fps=self.config.camera_fps))
        pc.addTrack(SyntheticMicrophone())
        return pc

    async def _offer(self, sdp: str) -> None:
        if self._pc is None:
            self._pc = self._new_pc()
        pc = self._pc
        await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        for message in self._pending:
            await self._add_candidate(pc, message)
        self._pending = []
        await pc.setLocalDescription(await pc.createAnswer())
        await self._send({"type": "answer", "sdp": pc.localDescription.sdp})

    async def _candidate(self, message: dict[str, Any]) -> None:
        if self._pc is None or self._pc.remoteDescription is None:
            self._pending.append(message)
        else:
            await self._add_candidate(self._pc, message)

    async def _add_candidate(self, pc: RTCPeerConnection, message: dict[str, Any]) -> None:
        text = message.get("candidate")
        if not isinstance(text, str):
            return
        if not text:  # the browser has gathered everything: ICE may now give up on failure
            await pc.addIceCandidate(None)
            return
        try:
            candidate = candidate_from_sdp(text.split(":", 1)[1] if text.startswith("candidate:") else text)
        except (AssertionError, ValueError, IndexError):
            log.warning("device %s: unreadable ICE candidate", self.config.device_id)
            return
        candidate.sdpMid = message.get("sdpMid")
        candidate.sdpMLineIndex = message.get("sdpMLineIndex")
        await pc.addIceCandidate(candidate)

    async def _close_pc(self) -> None:
        pc, self._pc = self._pc, None
        if pc is not None:
            await pc.close()
        await self.sink.stop()

    # -- the end ----------------------------------------------------------------------------------------

    async def _finish(self, reason: str) -> None:
        if self._ended.is_set() and self.state == "idle":
            return
        self.end_reason = reason
        self._ended.set()
        await self._close_pc()
        ws, self._ws = self._ws, None
        if ws is not None:
            with contextlib.suppress(Exception):
                await ws.close()
        if self.monitoring_indicator:
            self.monitoring_indicator = False
            self._emit("monitoring_indicator", {"on": False})
        self.state = "idle"
        self._emit("ended", {"call_id": self.call_id, "reason": reason})

    async def _decline_busy(self, call_id: str, token: str, base: str) -> None:
        """Already in a call: tell central at once instead of letting the second caller ring out."""
        try:
            async with websockets.connect(
                _ws_url(base, f"/api/calls/{call_id}/device"), open_timeout=5
            ) as ws:
                await ws.send(json.dumps({"type": "auth", "token": token}))
                await ws.send(json.dumps({"type": "decline"}))
        except (OSError, TimeoutError, websockets.InvalidHandshake, ConnectionClosed):
            pass

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.append(task)
        task.add_done_callback(self._tasks.remove)

    def _emit(self, name: str, data: dict[str, Any]) -> None:
        self.events.append((time.monotonic(), name, data))
        log.info("device %s: %s %s", self.config.device_id, name, data)
        if self._on_event is not None:
            self._on_event(name, data)
