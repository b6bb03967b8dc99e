"""The REST API and the live WebSocket; thin: each route checks who asks, then calls the service code."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Annotated, Any

from fastapi import (
    APIRouter,
    Cookie,
    Depends,
    HTTPException,
    Request,
    Response,
    WebSocket,
    WebSocketDisconnect,
)
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, Field
from sqlalchemy import text

from care.alert_store import AlertConflict, AlertNotFound, add_note, apply_action, assign
from care.alerts import OUTCOMES, Action, IllegalTransition
from care.visits import VisitNotFound, confirm_arrival, send_visit
from storage.models import User

from . import audit
from .auth import COOKIE_NAME, SignedInUser, create_session, end_session, user_for_token, verify_password
from .ids import BodyId, PathId
from .views import active_alert_views, alert_views

__all__ = ["router"]

router = APIRouter()

# Roles that may answer alerts on the console.
_CONSOLE_ROLES = frozenset({"care_nurse", "supervisor", "admin"})
# The server pings every console this often, so a dead connection is noticed on both sides.
_PING_S = 15.0


def _ctx(request: Request) -> Any:
    return request.app.state.ctx


def current_user(
    request: Request, token: Annotated[str | None, Cookie(alias=COOKIE_NAME)] = None
) -> SignedInUser:
    ctx = _ctx(request)
    if token:
        with ctx.sessions() as session:
            user = user_for_token(session, token, ctx.clock_ms())
        if user is not None:
            return user
    raise HTTPException(status_code=401, detail="not signed in")


def console_user(user: Annotated[SignedInUser, Depends(current_user)]) -> SignedInUser:
    if user.role not in _CONSOLE_ROLES:
        raise HTTPException(status_code=403, detail=f"the role {user.role} may not answer alerts")
    return user


CurrentUser = Annotated[SignedInUser, Depends(current_user)]
ConsoleUser = Annotated[SignedInUser, Depends(console_user)]


class Credentials(BaseModel):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=256)


class Me(BaseModel):
    id: int
    username: str
    display_name: str
    role: str


class ResolveRequest(BaseModel):
    outcome: str = Field(description=f"one of {sorted(OUTCOMES)}")


@router.post("/api/session", response_model=Me, tags=["session"])
def sign_in(body: Credentials, request: Request, response: Response) -> Me:
    """Sign in; sets an HttpOnly session cookie."""
    ctx = _ctx(request)
    if ctx.limiter.blocked(body.username):
        raise HTTPException(status_code=429, detail="too many failed sign-ins; wait five minutes")
    with ctx.sessions.begin() as session:
        user = verify_password(session, body.username, body.password)
        if user is None:
            ctx.limiter.fail(body.username)
            raise HTTPException(status_code=401, detail="unknown user name or wrong password")
        token = create_session(session, user.id, ctx.clock_ms(), ctx.session_hours)
        audit.record(session, user, "session.sign_in", now_ms=ctx.clock_ms())
    ctx.limiter.succeed(body.username)
    response.set_cookie(
        COOKIE_NAME,
        token,
        httponly=True,
        samesite="strict",
        secure=ctx.secure_cookies,
        max_age=int(ctx.session_hours * 3600),
        path="/",
    )
    return Me(id=user.id, username=user.username, display_name=user.display_name, role=user.role)


@router.delete("/api/session", status_code=204, tags=["session"])
def sign_out(request: Request, token: Annotated[str | None, Cookie(alias=COOKIE_NAME)] = None) -> Response:
    """Sign out and forget the session."""
    if token:
        with _ctx(request).sessions.begin() as session:
            end_session(session, token)
    response = Response(status_code=204)
    response.delete_cookie(COOKIE_NAME, path="/")
    return response


@router.get("/api/me", response_model=Me, tags=["session"])
def me(user: CurrentUser) -> Me:
    """Who is signed in."""
    return Me(id=user.id, username=user.username, display_name=user.display_name, role=user.role)


@router.get("/api/alerts", tags=["alerts"])
def list_alerts(request: Request, _user: ConsoleUser) -> list[dict[str, Any]]:
    """Every alert not yet resolved, most urgent and oldest first."""
    with _ctx(request).sessions() as session:
        return active_alert_views(session)


def _act(
    request: Request, user: SignedInUser, alert_id: int, action: Action, outcome: str | None
) -> dict[str, Any]:
    ctx = _ctx(request)
    try:
        with ctx.sessions.begin() as session:
            now = ctx.clock_ms()
            alert = apply_action(
                session, alert_id=alert_id, action=action, actor_id=user.id, now_ms=now, outcome=outcome
            )
            audit.record(
                session,
                user,
                f"alert.{action.value}",
                now_ms=now,
                alert_id=alert_id,
                client_id=alert.client_id,
                detail=outcome or "",
            )
    except AlertNotFound:
        raise HTTPException(status_code=404, detail=f"no alert {alert_id}") from None
    except IllegalTransition as exc:
        raise HTTPException(status_code=409, detail=str(exc)) from None
    except AlertConflict as exc:
        raise HTTPException(status_code=409, detail=str(exc)) from None
    ctx.notify_alerts()
    with ctx.sessions() as session:
        return alert_views(session, [alert_id])[0]


@router.post("/api/alerts/{alert_id}/acknowledge", tags=["alerts"])
def acknowledge(alert_id: PathId, request: Request, user: ConsoleUser) -> dict[str, Any]:
    """Take an alert: it leaves the open queue and shows who is on it."""
    return _act(request, user, alert_id, Action.ACKNOWLEDGE, None)


@router.post("/api/alerts/{alert_id}/resolve", tags=["alerts"])
def resolve(alert_id: PathId, body: ResolveRequest, request: Request, user: ConsoleUser) -> dict[str, Any]:
    """Close an alert with its outcome."""
    if body.outcome not in OUTCOMES:
        raise HTTPException(status_code=422, detail=f"outcome must be one of {sorted(OUTCOMES)}")
    return _act(request, user, alert_id, Action.RESOLVE, body.outcome)


class NoteRequest(BaseModel):
    text: str = Field(min_length=1, max_length=2000)


class AssignRequest(BaseModel):
    user_id: BodyId | None = Field(description="the user to assign to, or null to unassign")


class VisitRequest(BaseModel):
    visitor: str = Field(
        min_length=1, max_length=200, description="who is sent, e.g. the district nurse's name"
    )
    target_min: int | None = Field(
        default=None, ge=5, le=240, description="expected arrival (default: policy)"
    )


@router.post("/api/alerts/{alert_id}/notes", tags=["alerts"], status_code=201)
def add_alert_note(
    alert_id: PathId, body: NoteRequest, request: Request, user: ConsoleUser
) -> dict[str, Any]:
    """Add a note to an alert (shown on the client's timeline)."""
    ctx = _ctx(request)
    try:
        with ctx.sessions.begin() as session:
            note = add_note(
                session, alert_id=alert_id, user_id=user.id, text=body.text, now_ms=ctx.clock_ms()
            )
            result = {"id": note.id, "alert_id": alert_id, "text": note.text, "at_ms": note.at_ms}
            audit.record(session, user, "alert.note", now_ms=note.at_ms, alert_id=alert_id)
    except AlertNotFound:
        raise HTTPException(status_code=404, detail=f"no alert {alert_id}") from None
    ctx.notify_alerts()
    return result


@router.post("/api/alerts/{alert_id}/assign", tags=["alerts"])
def assign_alert(
    alert_id: PathId, body: AssignRequest, request: Request, user: ConsoleUser
) -> dict[str, Any]:
    """Assign an alert to a colleague (or nobody)."""
    ctx = _ctx(request)
    try:
        with ctx.sessions.begin() as session:
            if body.user_id is not None and session.get(User, body.user_id) is None:
                raise HTTPException(status_code=422, detail=f"no user {body.user_id}")
            assigned = assign(
                session, alert_id=alert_id, user_id=body.user_id, actor_id=user.id, now_ms=ctx.clock_ms()
            )
            audit.record(
                session,
                user,
                "alert.assign",
                now_ms=ctx.clock_ms(),
                alert_id=alert_id,
                client_id=assigned.client_id,
                detail=f"to user {body.user_id}",
            )
    except AlertNotFound:
        raise HTTPException(status_code=404, detail=f"no alert {alert_id}") from None
    except IllegalTransition as exc:
        raise HTTPException(status_code=409, detail=str(exc)) from None
    ctx.notify_alerts()
    with ctx.sessions() as session:
        return alert_views(session, [alert_id])[0]


@router.post("/api/alerts/{alert_id}/visits", tags=["visits"], status_code=201)
def start_visit(alert_id: PathId, body: VisitRequest, request: Request, user: ConsoleUser) -> dict[str, Any]:
    """Send someone to the client's home; an escalation follows if arrival is not confirmed in time."""
    ctx = _ctx(request)
    try:
        with ctx.sessions.begin() as session:
            visit = send_visit(
                session,
                alert_id=alert_id,
                visitor=body.visitor,
                user_id=user.id,
                now_ms=ctx.clock_ms(),
                target_s=body.target_min * 60 if body.target_min else None,
            )
            audit.record(
                session,
                user,
                "visit.send",
                now_ms=ctx.clock_ms(),
                alert_id=alert_id,
                client_id=visit.client_id,
            )
            result = {
                "id": visit.id,
                "alert_id": alert_id,
                "visitor": visit.visitor,
                "target_ms": visit.target_ms,
                "state": visit.state,
            }
    except AlertNotFound:
        raise HTTPException(status_code=404, detail=f"no alert {alert_id}") from None
    ctx.notify_alerts()
    return result


@router.post("/api/visits/{visit_id}/arrived", tags=["visits"])
def visit_arrived(visit_id: PathId, request: Request, user: CurrentUser) -> dict[str, Any]:
    """Confirm the visitor is at the client's door."""
    ctx = _ctx(request)
    try:
        with ctx.sessions.begin() as session:
            visit = confirm_arrival(session, visit_id=visit_id, user_id=user.id, now_ms=ctx.clock_ms())
            audit.record(
                session,
                user,
                "visit.arrived",
                now_ms=ctx.clock_ms(),
                alert_id=visit.alert_id,
                client_id=visit.client_id,
            )
            result = {"id": visit.id, "state": visit.state, "arrived_ms": visit.arrived_ms}
    except VisitNotFound:
        raise HTTPException(status_code=404, detail=f"no visit {visit_id} under way") from None
    ctx.notify_alerts()
    return result


@router.get("/livez", tags=["operations"])
def live_check(request: Request) -> dict[str, str]:
    """This process is up and reaches the database (for a process supervisor or a load balancer)."""
    try:
        with _ctx(request).sessions() as session:
            session.execute(text("SELECT 1"))
    except Exception as exc:
        raise HTTPException(
            status_code=503, detail=f"database unavailable ({exc.__class__.__name__})"
        ) from None
    return {"status": "ok"}


@router.get("/healthz", tags=["operations"])
def health(request: Request) -> JSONResponse:
    """The whole alarm chain: "ok" only when broker, gateway, database, monitor and the end-to-end probe
    all work (503 with the problems otherwise). Without a watchdog in this process: as ``/livez``."""
    watchdog = _ctx(request).watchdog
    if watchdog is None:
        return JSONResponse(live_check(request))
    body = watchdog.health.as_json()
    return JSONResponse(body, status_code=200 if watchdog.health.ok else 503)


@router.get("/metrics", response_class=PlainTextResponse, tags=["operations"])
def metrics(request: Request) -> str:
    """Prometheus metrics of the components running in this process."""
    return "".join(source() for source in _ctx(request).metrics_sources)


@router.websocket("/api/live")
async def live(websocket: WebSocket) -> None:
    """The console's live feed: a snapshot of active alerts, then every change as it happens."""
    ctx = websocket.app.state.ctx
    token = websocket.cookies.get(COOKIE_NAME)
    user = None
    if token:
        user = await asyncio.to_thread(_user_for, ctx, token)
    if user is None or user.role not in _CONSOLE_ROLES:
        await websocket.close(code=4401, reason="not signed in")
        return
    await websocket.accept()
    queue = ctx.broadcaster.subscribe()
    try:
        # Subscribe first, then read the snapshot: a change in between arrives twice, never zero times,
        # and the console keeps the higher version of each alert.
        await _send_snapshot(websocket, ctx)
        while True:
            try:
                message = await asyncio.wait_for(queue.get(), timeout=_PING_S)
            except TimeoutError:
                await websocket.send_json({"type": "ping", "server_ms": ctx.clock_ms()})
                continue
            if message["type"] == "resync":
                await _send_snapshot(websocket, ctx)
            else:
                await websocket.send_json(message)
    except WebSocketDisconnect:
        pass
    finally:
        ctx.broadcaster.unsubscribe(queue)
        with contextlib.suppress(Exception):
            await websocket.close()


def _user_for(ctx: Any, token: str) -> SignedInUser | None:
    with ctx.sessions() as session:
        return user_for_token(session, token, ctx.clock_ms())


async def _send_snapshot(websocket: WebSocket, ctx: Any) -> None:
    def read() -> list[dict[str, Any]]:
        with ctx.sessions() as session:
            return active_alert_views(session)

    alerts = await asyncio.to_thread(read)
    await websocket.send_json({"type": "snapshot", "server_ms": ctx.clock_ms(), "alerts": alerts})
    if ctx.watchdog is not None:
        await websocket.send_json({"type": "health", "health": ctx.watchdog.health.as_json()})
