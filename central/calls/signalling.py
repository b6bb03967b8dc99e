"""The signalling hub: live calls in memory, their two WebSocket peers, relaying offer/answer/ICE candidates.

The pure lifecycle is :mod:`.state`; this adapter feeds it events (messages, socket opens and closes, the
ticker's ``now``), stores every change in the ``calls`` table and tells both peers and the consoles.
All of it runs on the server's event loop; the database is reached through ``asyncio.to_thread``.

Exceptions::

    CallRefused              a call that cannot be started (no video device, no consent, taken): .status
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import secrets
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from care.commands import CommandSender, Publish
from messaging.mqtt import MqttConfig
from storage.db import SessionFactory

from .. import audit
from . import store
from .state import (
    Call,
    CallState,
    Event,
    IllegalTransition,
    Quality,
    Side,
    Timeouts,
    apply,
    due,
    gone,
    new_call,
    seen,
)
from .turn import with_turn_credentials

__all__ = ["CallHub", "CallRefused", "CallsConfig", "Peer"]

log = logging.getLogger(__name__)

# Messages each side may send; anything else is answered with an error. Relay kinds go to the other side.
_RELAY = frozenset({"offer", "answer", "candidate"})
_NURSE_KINDS = frozenset({"ping", "take", "offer", "candidate", "media", "reconnect", "stats", "hangup"})
_DEVICE_KINDS = frozenset(
    {"ping", "accept", "decline", "answer", "candidate", "media", "reconnect", "hangup"}
)
# An SDP with a few dozen candidates is ~10 kB; anything far beyond that is not a browser or aiortc.
MAX_MESSAGE_CHARS = 64_000


class Peer(Protocol):
    """One side's signalling socket, as the hub sees it."""

    async def send(self, message: dict[str, Any]) -> None: ...

    async def close(self, code: int, reason: str) -> None: ...


class CallRefused(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


@dataclass
class CallsConfig:
    """Set by whoever builds the app (``CentralContext.calls``); the defaults suit a closed network."""

    # RTCIceServer dicts for browsers and devices: [{"urls": [...], "username"?, "credential"?}].
    ice_servers: list[dict[str, Any]] = field(default_factory=list)
    # Shared with the TURN server: each side gets a short-lived TURN credential (central.calls.turn).
    turn_secret: str = ""
    # Where devices reach central (sent in the ring command); empty: the device knows it itself.
    public_url: str = ""
    timeouts: Timeouts = field(default_factory=Timeouts)
    ring: Publish | None = None  # how commands reach devices (care.commands): rings and schedules
    mqtt: MqttConfig | None = None  # without ``ring``: the router's lifespan publishes rings on this broker
    tick_s: float = 0.5
    clock_ms: Callable[[], int] | None = None


@dataclass
class LiveCall:
    call: Call
    client_id: int
    client_name: str
    device_id: str
    token_hash: str
    auto_answer: bool
    nurse_id: int | None = None
    nurse_name: str | None = None
    nurse: Peer | None = None
    device: Peer | None = None
    nurse_media: bool = False
    client_media: bool = False
    quality: Quality = field(default_factory=Quality)
    dirty: bool = False
    writer: asyncio.Task[None] | None = None


_ENDED_KEPT = 256  # recently ended calls remembered for late sockets


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class CallHub:
    def __init__(self, sessions: SessionFactory, config: CallsConfig) -> None:
        self._sessions = sessions
        self.config = config
        self._clock = config.clock_ms or (lambda: int(time.time() * 1000))
        self.calls: dict[str, LiveCall] = {}
        # The last calls that ended, as their views: a nurse socket that arrives while the end is still being
        # stored (a quick decline) hears how the call ended instead of "no such call".
        self._ended: OrderedDict[str, dict[str, Any]] = OrderedDict()
        # Call rows are written on their own threads: a burst of writes (SQLite takes one writer at a time)
        # must not queue the sign-in checks and rings that share asyncio's default pool.
        self._db_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="calls-db")
        self._watchers: set[asyncio.Queue[dict[str, Any]]] = set()

    # -- starting calls ------------------------------------------------------------------------------

    async def start_outbound(
        self, *, client_id: int, kind: Literal["video", "monitoring"], nurse_id: int, nurse_name: str
    ) -> dict[str, Any]:
        """The care station calls a client (``video``) or looks in (``monitoring``, needs consent)."""
        callee = await asyncio.to_thread(self._read, store.callee_for_client, client_id)
        if callee is None:
            raise CallRefused(409, f"client {client_id} has no video device")
        if kind == "monitoring" and not callee.consent.monitoring_allowed:
            raise CallRefused(403, "video monitoring needs the client's recorded consent")
        token = secrets.token_urlsafe(24)
        now = self._clock()
        live = LiveCall(
            call=new_call(uuid.uuid4().hex, direction="outbound", kind=kind, now_ms=now),
            client_id=callee.client_id,
            client_name=callee.client_name,
            device_id=callee.device_id,
            token_hash=_digest(token),
            auto_answer=callee.consent.auto_answer,
            nurse_id=nurse_id,
            nurse_name=nurse_name,
        )
        self.calls[live.call.id] = live
        await self._save(live)
        if kind == "monitoring":
            # A look into someone's home: on the record (audit_log) when it starts and when it ends.
            await asyncio.to_thread(
                audit.write,
                self._sessions,
                nurse_id,
                "monitoring.start",
                now,
                client_id=callee.client_id,
                detail=f"call {live.call.id}",
            )
        self._notify_watchers()
        args = {"call_id": live.call.id, "caller": nurse_name[:100] or "care station", "token": token}
        if self.config.public_url:
            args["url"] = self.config.public_url
        # Sent the one way every command goes (recorded, then published); the record leaves out the token.
        recorded = {k: v for k, v in args.items() if k != "token"}
        sender = CommandSender(self._sessions, self.config.ring, self._clock)
        sent = await asyncio.to_thread(sender.send, live.device_id, "ring", args, recorded_args=recorded)
        if not sent:
            log.warning("call %s: the ring for %s could not be sent", live.call.id, live.device_id)
            await self._event(live, Event.UNREACHABLE)
        return self.view(live)

    async def start_inbound(self, device_id: str) -> LiveCall:
        """The client calls the care station from an authenticated device; any nurse on duty may take it."""
        callee = await asyncio.to_thread(self._read, store.callee_for_device, device_id)
        if callee is None:
            raise CallRefused(409, f"{device_id} is not a video device")
        live = LiveCall(
            call=new_call(uuid.uuid4().hex, direction="inbound", kind="video", now_ms=self._clock()),
            client_id=callee.client_id,
            client_name=callee.client_name,
            device_id=device_id,
            token_hash="",
            auto_answer=False,
        )
        self.calls[live.call.id] = live
        await self._save(live)
        self._notify_watchers()
        return live

    # -- peers ---------------------------------------------------------------------------------------

    def device_token_ok(self, call_id: str, token: str) -> bool:
        live = self.calls.get(call_id)
        return bool(live and live.token_hash and hmac.compare_digest(live.token_hash, _digest(token)))

    def ice_servers_for(self, who: str) -> list[dict[str, Any]]:
        """The STUN/TURN servers for one side: TURN with a credential of its own, valid for hours."""
        return with_turn_credentials(
            self.config.ice_servers, self.config.turn_secret, who, self._clock() // 1000
        )

    def ended_view(self, call_id: str) -> dict[str, Any] | None:
        """How a call that ended lately ended (its view), if this hub ended it; else None."""
        return self._ended.get(call_id)

    def claim(self, call_id: str, user_id: int, user_name: str) -> bool:
        """May this nurse join the call? An incoming call that nobody has is hers from now on."""
        live = self.calls.get(call_id)
        if live is None:
            return False
        if live.nurse_id is None and live.call.direction == "inbound":
            live.nurse_id, live.nurse_name = user_id, user_name
        return live.nurse_id == user_id

    async def attach(self, call_id: str, side: Side, peer: Peer) -> LiveCall | None:
        """Make ``peer`` the current socket of ``side`` (a reconnect replaces the old one) and greet it."""
        live = self.calls.get(call_id)
        if live is None:
            return None
        old = live.nurse if side == "nurse" else live.device
        if side == "nurse":
            live.nurse = peer
        else:
            live.device = peer
        if old is not None and old is not peer:
            with contextlib.suppress(Exception):
                await old.close(4409, "replaced by a newer connection")
        live.call = seen(live.call, side, self._clock())
        hello: dict[str, Any] = {
            "type": "hello",
            "role": side,
            "call": self.view(live),
            "ice_servers": self.ice_servers_for(
                f"nurse-{live.nurse_id}" if side == "nurse" else f"device-{live.device_id}"
            ),
        }
        if side == "client":
            hello["auto_answer"] = live.auto_answer
        await self._send(peer, hello)
        return live

    async def detach(self, live: LiveCall, side: Side, peer: Peer) -> None:
        """The socket closed: the call waits ``reconnect_grace_ms`` for that side to come back."""
        current = live.nurse if side == "nurse" else live.device
        if current is not peer:
            return
        if side == "nurse":
            live.nurse = None
        else:
            live.device = None
        if live.call.state is not CallState.ENDED:
            log.info("call %s: the %s's signalling socket closed", live.call.id, side)
            live.call = gone(live.call, side, self._clock())

    async def handle(self, live: LiveCall, side: Side, peer: Peer, message: dict[str, Any]) -> None:
        """Act on one message from ``side``."""
        if live.call.state is CallState.ENDED:
            return
        kind = message.get("type")
        allowed = _NURSE_KINDS if side == "nurse" else _DEVICE_KINDS
        if not isinstance(kind, str) or kind not in allowed:
            await self._send(peer, {"type": "error", "detail": f"unknown message type {kind!r}"})
            return
        live.call = seen(live.call, side, self._clock())
        if kind == "ping":
            await self._send(peer, {"type": "pong", "server_ms": self._clock()})
        elif kind in _RELAY:
            other = live.device if side == "nurse" else live.nurse
            if other is not None:
                await self._send(other, _relayed(message))
        elif kind == "take":
            await self._take(live, peer)
        elif kind == "accept" and live.call.direction == "outbound":
            await self._event(live, Event.ACCEPT)
        elif kind == "decline" and live.call.direction == "outbound":
            await self._event(live, Event.DECLINE)
        elif kind == "media":
            await self._media(live, side, bool(message.get("up")))
        elif kind == "reconnect":
            await self._reconnect(live)
        elif kind == "stats":
            live.quality = _add_stats(live.quality, message)
        elif kind == "hangup":
            await self._event(live, Event.HANGUP_NURSE if side == "nurse" else Event.HANGUP_CLIENT)
        else:
            await self._send(peer, {"type": "error", "detail": f"{kind} is not possible now"})

    async def _take(self, live: LiveCall, peer: Peer) -> None:
        # Who takes it was settled when her socket was let in (claim): the first nurse wins.
        if live.call.direction != "inbound" or live.call.state is not CallState.RINGING:
            await self._send(peer, {"type": "error", "detail": "this call cannot be taken now"})
            return
        await self._event(live, Event.ACCEPT)

    async def _media(self, live: LiveCall, side: Side, up: bool) -> None:
        if side == "nurse":
            live.nurse_media = up
        else:
            live.client_media = up
        if live.nurse_media and live.client_media and live.call.state is CallState.ACCEPTED:
            await self._event(live, Event.MEDIA_UP)

    async def _reconnect(self, live: LiveCall) -> None:
        """A peer's media path broke (network change): both build fresh peer connections, no new ring."""
        if live.call.state is not CallState.CONNECTED:
            return
        live.nurse_media = live.client_media = False
        await self._event(live, Event.RECONNECT)

    # -- lifecycle -----------------------------------------------------------------------------------

    async def tick(self) -> None:
        """Apply every timeout that is due now (the ticker calls this; tests call it with their clock)."""
        now = self._clock()
        for live in list(self.calls.values()):
            event = due(live.call, now, self.config.timeouts)
            if event is not None:
                await self._event(live, event)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.config.tick_s)
            try:
                await self.tick()
            except Exception:  # the ticker must outlive one bad call
                log.exception("calls ticker")

    async def shutdown(self) -> None:
        for live in list(self.calls.values()):
            await self._event(live, Event.SHUTDOWN)
        self._db_pool.shutdown(wait=False)

    async def _event(self, live: LiveCall, event: Event) -> None:
        try:
            live.call = apply(live.call, event, self._clock())
        except IllegalTransition as exc:
            log.info("call %s: ignored: %s", live.call.id, exc)
            return
        view = self.view(live)
        ended = live.call.state is CallState.ENDED
        if ended:
            self.calls.pop(live.call.id, None)
            self._ended[live.call.id] = view
            while len(self._ended) > _ENDED_KEPT:
                self._ended.popitem(last=False)
            if live.call.kind == "monitoring" and live.nurse_id is not None:
                await self._audit_end(live, live.nurse_id)
        message: dict[str, Any] = {"type": "ended" if ended else "state", "call": view}
        if event is Event.RECONNECT:
            message["reconnect"] = True
        # The start and the end are stored before anyone hears of them; the steps between are written
        # behind (coalesced), so a slow database never delays the media set-up.
        await self._save(live, wait=ended)
        for peer in (live.nurse, live.device):
            if peer is not None:
                await self._send(peer, message)
        self._notify_watchers()
        if ended:
            for peer in (live.nurse, live.device):
                if peer is not None:
                    with contextlib.suppress(Exception):
                        await peer.close(1000, live.call.end_reason or "ended")

    async def _audit_end(self, live: LiveCall, nurse_id: int) -> None:
        call = live.call
        seconds = ((call.ended_ms or self._clock()) - call.started_ms) // 1000
        await asyncio.to_thread(
            audit.write,
            self._sessions,
            nurse_id,
            "monitoring.end",
            self._clock(),
            client_id=live.client_id,
            detail=f"call {call.id}: {call.end_reason or 'ended'} after {seconds} s",
        )

    async def _save(self, live: LiveCall, *, wait: bool = True) -> None:
        """Write the call's latest state; one writer per call, so rows never go back to an older state."""
        live.dirty = True
        if live.writer is None or live.writer.done():
            live.writer = asyncio.create_task(self._write_loop(live))
        if wait:
            await live.writer

    async def _write_loop(self, live: LiveCall) -> None:
        loop = asyncio.get_running_loop()
        while live.dirty:
            live.dirty = False
            call, quality = live.call, live.quality
            summary = quality.summary() if call.state is CallState.ENDED or quality.samples else None
            try:
                await loop.run_in_executor(self._db_pool, self._write_row, live, call, summary)
            except Exception:  # a lost timeline row must not end a live call
                log.exception("call %s: could not be stored", call.id)

    def _write_row(self, live: LiveCall, call: Call, summary: dict[str, Any] | None) -> None:
        with self._sessions.begin() as session:
            store.save_call(
                session,
                call,
                client_id=live.client_id,
                device_id=live.device_id,
                nurse_user_id=live.nurse_id,
                quality=summary,
            )

    async def _send(self, peer: Peer, message: dict[str, Any]) -> None:
        with contextlib.suppress(Exception):  # a dead socket is noticed by its receive loop
            await peer.send(message)

    def _read(self, fn: Callable[..., Any], *args: Any) -> Any:
        with self._sessions() as session:
            return fn(session, *args)

    # -- views and the console feed --------------------------------------------------------------------

    def view(self, live: LiveCall) -> dict[str, Any]:
        c = live.call
        return {
            "id": c.id,
            "direction": c.direction,
            "kind": c.kind,
            "state": c.state.value,
            "end_reason": c.end_reason,
            "client_id": live.client_id,
            "client_name": live.client_name,
            "device_id": live.device_id,
            "nurse_id": live.nurse_id,
            "nurse_name": live.nurse_name,
            "started_ms": c.started_ms,
            "answered_ms": c.answered_ms,
            "connected_ms": c.connected_ms,
            "ended_ms": c.ended_ms,
            "restarts": c.restarts,
        }

    def active(self) -> list[dict[str, Any]]:
        return [self.view(live) for live in sorted(self.calls.values(), key=lambda x: x.call.started_ms)]

    def watch(self) -> asyncio.Queue[dict[str, Any]]:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=100)
        self._watchers.add(queue)
        return queue

    def unwatch(self, queue: asyncio.Queue[dict[str, Any]]) -> None:
        self._watchers.discard(queue)

    def _notify_watchers(self) -> None:
        message = {"type": "calls", "server_ms": self._clock(), "calls": self.active()}
        for queue in list(self._watchers):
            if queue.full():  # a stuck console gets the newest picture, not a backlog
                with contextlib.suppress(asyncio.QueueEmpty):
                    queue.get_nowait()
            queue.put_nowait(message)


def _relayed(message: dict[str, Any]) -> dict[str, Any]:
    """Pass on only the fields WebRTC needs (no server-side annotations, nothing unexpected)."""
    keys = ("type", "sdp", "candidate", "sdpMid", "sdpMLineIndex")
    return {k: message[k] for k in keys if k in message}


def _add_stats(quality: Quality, message: dict[str, Any]) -> Quality:
    def number(key: str) -> float | None:
        value = message.get(key)
        return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None

    fps, loss = number("fps"), number("loss_pct")
    if fps is None or loss is None:
        return quality
    return quality.add(fps=fps, loss_pct=loss, rtt_ms=number("rtt_ms"))
