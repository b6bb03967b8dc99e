"""Calls API: start a call, the console's calls feed, the signalling sockets, consent and the timeline.

The hub runs while the app does (``create_app``'s lifespan); routes reach it through ``central.deps.Hub``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, WebSocket, WebSocketDisconnect
from pydantic import BaseModel, Field

from storage.calls_models import CallRecord
from storage.db import SessionFactory
from storage.models import Client

from .. import audit
from ..auth import SignedInUser
from ..context import CentralContext
from ..deps import Ctx, Hub, require, socket_user
from ..errors import NotFound
from ..ids import BodyId, PathId
from ..routes import CONSOLE, ConsoleUser
from ..schemas import CallRecordView, CallsConfigView, CallView, ConsentView, VideoCallee
from . import store
from .signalling import MAX_MESSAGE_CHARS, CallHub, CallRefused, LiveCall
from .state import Side

__all__ = ["router"]

# The console (central.routes): they may call, take calls and watch the calls feed.
ConsentUser = Annotated[SignedInUser, Depends(require("consent.record"))]
# A client's call history and consent are part of the record: whoever may read it (in her district).
RecordUser = Annotated[SignedInUser, Depends(require("client.read"))]
# A device that opens a socket and says nothing is dropped after this long.
_AUTH_TIMEOUT_S = 10.0
# The consoles' calls feed pings this often so a dead connection is noticed.
_PING_S = 15.0


router = APIRouter()


class StartCall(BaseModel):
    client_id: BodyId
    kind: Literal["video", "monitoring"] = "video"


class ConsentBody(BaseModel):
    monitoring_allowed: bool = Field(description="video monitoring without answering (always signalled)")
    auto_answer: bool = Field(description="the device answers the care station's calls by itself")


def _consent_view(consent: store.Consent) -> dict[str, Any]:
    return dataclasses.asdict(consent)


@router.post("/api/calls", status_code=201, response_model=CallView, tags=["calls"])
async def start_call(body: StartCall, ctx: Ctx, hub: Hub, user: ConsoleUser) -> dict[str, Any]:
    """Call a client's video device (it rings), or start monitoring where consent is recorded."""
    view = await hub.start_outbound(  # CallRefused: its own status (create_app)
        client_id=body.client_id, kind=body.kind, nurse_id=user.id, nurse_name=user.display_name
    )
    # A monitoring session's start and end are audited by the hub (monitoring.start, monitoring.end).
    await asyncio.to_thread(
        audit.write,
        ctx.sessions,
        user,
        "call.start",
        ctx.clock_ms(),
        client_id=body.client_id,
        detail=f"{body.kind} call {view['id']}",
    )
    return view


@router.get("/api/calls/active", response_model=list[CallView], tags=["calls"])
def active_calls(ctx: Ctx, hub: Hub, user: ConsoleUser) -> list[dict[str, Any]]:
    """Calls not yet ended; incoming ones (direction inbound, state ringing) wait for a nurse."""
    calls = hub.active()
    audit.write(ctx.sessions, user, "call.list", ctx.clock_ms(), **_shown(calls))
    return calls


def _shown(calls: list[dict[str, Any]]) -> dict[str, Any]:
    """The audit row's words for a list of calls shown: how many, of how many clients (and which one)."""
    clients = {c["client_id"] for c in calls}
    return {
        "detail": f"{len(calls)} calls of {len(clients)} clients",
        "client_id": next(iter(clients)) if len(clients) == 1 else None,
    }


@router.get("/api/calls/config", response_model=CallsConfigView, tags=["calls"])
def call_config(hub: Hub, user: ConsoleUser) -> dict[str, Any]:
    """The STUN/TURN servers the browser must use (also sent in each call's hello), TURN with a short-lived
    credential of this nurse's own."""
    return {"ice_servers": hub.ice_servers_for(f"nurse-{user.id}")}


@router.get("/api/clients/{client_id}/video", response_model=VideoCallee, tags=["calls"])
def client_video(client_id: PathId, ctx: Ctx, user: ConsoleUser) -> dict[str, Any]:
    """The client's video device and recorded consent, for the call page."""
    with ctx.sessions.begin() as session:
        callee = store.callee_for_client(session, client_id)
        if callee is None:
            raise NotFound(f"client {client_id} has no video device")
        audit.record(session, user, "client.video", now_ms=ctx.clock_ms(), client_id=client_id)
    return {
        "client_id": callee.client_id,
        "client_name": callee.client_name,
        "device_id": callee.device_id,
        "consent": _consent_view(callee.consent),
    }


@router.get("/api/clients/{client_id}/calls", response_model=list[CallRecordView], tags=["calls"])
def client_calls(client_id: PathId, ctx: Ctx, user: RecordUser) -> list[dict[str, Any]]:
    """The client's calls and monitoring sessions, newest first: outcome, duration, quality."""
    with ctx.sessions.begin() as session:
        calls = store.timeline(session, client_id)
        audit.record(
            session,
            user,
            "client.calls",
            now_ms=ctx.clock_ms(),
            client_id=client_id,
            detail=f"{len(calls)} calls",
        )
    return calls


@router.get("/api/clients/{client_id}/video-consent", response_model=ConsentView, tags=["calls"])
def get_consent(client_id: PathId, ctx: Ctx, user: RecordUser) -> dict[str, Any]:
    """What the client agreed to about video: monitoring, and the device answering by itself."""
    with ctx.sessions.begin() as session:
        consent = store.consent_for(session, client_id)
        audit.record(session, user, "consent.read", now_ms=ctx.clock_ms(), client_id=client_id)
    return _consent_view(consent)


@router.put("/api/clients/{client_id}/video-consent", response_model=ConsentView, tags=["calls"])
def put_consent(client_id: PathId, body: ConsentBody, ctx: Ctx, user: ConsentUser) -> dict[str, Any]:
    """Record what the client agreed to (who recorded it and when are kept)."""
    with ctx.sessions.begin() as session:
        if session.get(Client, client_id) is None:
            raise NotFound(f"no client {client_id}")
        consent = store.record_consent(
            session,
            client_id=client_id,
            monitoring_allowed=body.monitoring_allowed,
            auto_answer=body.auto_answer,
            user_id=user.id,
            now_ms=ctx.clock_ms(),
        )
        audit.record(
            session,
            user,
            "consent.record",
            now_ms=ctx.clock_ms(),
            client_id=client_id,
            detail=f"monitoring_allowed={body.monitoring_allowed} auto_answer={body.auto_answer}",
        )
    return _consent_view(consent)


# -- WebSockets ---------------------------------------------------------------------------------------


class _WsPeer:
    def __init__(self, websocket: WebSocket) -> None:
        self._ws = websocket

    async def send(self, message: dict[str, Any]) -> None:
        await self._ws.send_json(message)

    async def close(self, code: int, reason: str) -> None:
        await self._ws.close(code=code, reason=reason)


async def _receive(websocket: WebSocket) -> dict[str, Any] | None:
    """The next JSON object from the socket; None for a message that is not one (it is skipped)."""
    text = await websocket.receive_text()
    if len(text) > MAX_MESSAGE_CHARS:
        return None
    try:
        body = json.loads(text)
    except json.JSONDecodeError:
        return None
    return body if isinstance(body, dict) else None


async def _console_user(websocket: WebSocket, ctx: CentralContext) -> SignedInUser | None:
    """The signed-in user of the socket's cookie, when the policy lets them work the console here (the
    call's client in their district); else the socket is refused (4401 anonymous, 4403 refused) and None."""
    user, why = await socket_user(websocket, ctx, CONSOLE)
    if why is not None:
        await _refuse(websocket, *why)
        return None
    return user


async def _refuse(websocket: WebSocket, code: int, detail: str) -> None:
    with contextlib.suppress(Exception):
        await websocket.send_json({"type": "error", "detail": detail})
        await websocket.close(code=code, reason=detail[:120])


async def _serve(hub: CallHub, live: LiveCall, side: Side, websocket: WebSocket, peer: _WsPeer) -> None:
    try:
        while True:
            message = await _receive(websocket)
            if message is None:
                await peer.send({"type": "error", "detail": "messages are JSON objects"})
                continue
            await hub.handle(live, side, peer, message)
    except (WebSocketDisconnect, RuntimeError):  # RuntimeError: the hub closed it after the end
        pass
    finally:
        await hub.detach(live, side, peer)


@router.websocket("/api/calls/{call_id}/nurse")
async def nurse_socket(websocket: WebSocket, call_id: str, ctx: Ctx, hub: Hub) -> None:
    """The nurse's signalling for one call (session cookie; the caller, or anyone taking an inbound one)."""
    await websocket.accept()
    user = await _console_user(websocket, ctx)
    if user is None:
        return
    if not hub.claim(call_id, user.id, user.display_name):
        ended = hub.ended_view(call_id) or await asyncio.to_thread(_ended_call, ctx.sessions, call_id)
        if ended is not None:
            # The call ended before this socket arrived (a quick decline): say how, not just "unknown".
            await websocket.send_json({"type": "ended", "call": ended})
            await websocket.close(code=1000)
            return
        await _refuse(websocket, 4404, "no such call in progress, or another nurse has it")
        return
    peer = _WsPeer(websocket)
    live = await hub.attach(call_id, "nurse", peer)
    if live is not None:
        await _serve(hub, live, "nurse", websocket, peer)


def _ended_call(sessions: SessionFactory, call_id: str) -> dict[str, Any] | None:
    if len(call_id) > 32:
        return None
    with sessions() as session:
        record = session.get(CallRecord, call_id)
        if record is None or record.state != "ended":
            return None
        return {"id": record.id, "state": record.state, "end_reason": record.end_reason}


@router.websocket("/api/calls/{call_id}/device")
async def device_socket(websocket: WebSocket, call_id: str, hub: Hub) -> None:
    """The device's signalling for a call it was rung for; the first message carries the ring's token."""
    await websocket.accept()
    try:
        first = await asyncio.wait_for(_receive(websocket), timeout=_AUTH_TIMEOUT_S)
    except (TimeoutError, WebSocketDisconnect):
        return
    token = first.get("token") if first else None
    if not isinstance(token, str) or not hub.device_token_ok(call_id, token):
        await _refuse(websocket, 4401, "unknown call or wrong token")
        return
    peer = _WsPeer(websocket)
    live = await hub.attach(call_id, "client", peer)
    if live is not None:
        await _serve(hub, live, "client", websocket, peer)


@router.websocket("/api/device/calls")
async def device_call(websocket: WebSocket, ctx: Ctx, hub: Hub) -> None:
    """A client calls the care station: the device signs in with its broker credentials, then signals."""
    await websocket.accept()
    try:
        first = await asyncio.wait_for(_receive(websocket), timeout=_AUTH_TIMEOUT_S)
    except (TimeoutError, WebSocketDisconnect):
        return
    device_id = first.get("device_id") if first else None
    password = first.get("password") if first else None
    if not isinstance(device_id, str) or not isinstance(password, str):
        await _refuse(websocket, 4401, "send device_id and password first")
        return

    def check() -> bool:
        with ctx.sessions() as session:
            return store.verify_device_password(session, device_id, password)

    if not await asyncio.to_thread(check):
        await _refuse(websocket, 4401, "unknown device or wrong password")
        return
    try:
        live = await hub.start_inbound(device_id)
    except CallRefused as exc:
        await _refuse(websocket, 4409, exc.detail)
        return
    peer = _WsPeer(websocket)
    if await hub.attach(live.call.id, "client", peer) is not None:
        await _serve(hub, live, "client", websocket, peer)


@router.websocket("/api/calls/live")
async def calls_feed(websocket: WebSocket, ctx: Ctx, hub: Hub) -> None:
    """The console's calls feed: every active call now, then the whole list again after each change."""
    await websocket.accept()
    user = await _console_user(websocket, ctx)
    if user is None:
        return
    queue = hub.watch()
    try:
        calls = hub.active()
        # Audited once per subscription, with what it first showed, before it is shown.
        await asyncio.to_thread(
            audit.write, ctx.sessions, user, "calls.subscribe", ctx.clock_ms(), **_shown(calls)
        )
        await websocket.send_json({"type": "calls", "calls": calls})
        while True:
            try:
                message = await asyncio.wait_for(queue.get(), timeout=_PING_S)
            except TimeoutError:
                message = {"type": "ping"}
            await websocket.send_json(message)
    except (WebSocketDisconnect, RuntimeError):
        pass
    finally:
        hub.unwatch(queue)
