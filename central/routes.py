"""The REST API and the live WebSocket; thin: each route checks who asks, then calls the service code."""

from __future__ import annotations

import asyncio
import contextlib
import math
from typing import Annotated, Any, Final

from fastapi import (
    APIRouter,
    Cookie,
    Depends,
    HTTPException,
    Query,
    Request,
    Response,
    WebSocket,
    WebSocketDisconnect,
)
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, Field
from sqlalchemy import select, text

from care.alert_store import add_note, apply_action, assign, resolve_alert, undo_resolve
from care.alerts import OUTCOMES, UNDO_WINDOW_MS, Action
from care.visits import confirm_arrival, send_visit
from storage.models import Alert, User

from . import audit
from .auth import COOKIE_NAME, SignedInUser, create_session, end_session, verify_password
from .context import CentralContext
from .deps import Ctx, CurrentUser, require, socket_user
from .errors import Unprocessable
from .handover import DEFAULT_HOURS, Handover, handover
from .ids import BodyId, PathId
from .schemas import (
    AlertNoteView,
    AlertView,
    ChainHealthView,
    Liveness,
    Me,
    VisitArrived,
    VisitSent,
)
from .views import active_alert_views, alert_views

__all__ = ["ConsoleUser", "router"]

router = APIRouter()

# The care station's console: the queue, the live feed, and all that answers alerts (central.access).
CONSOLE: Final = "alert.answer"
ConsoleUser = Annotated[SignedInUser, Depends(require(CONSOLE))]
ArrivalUser = Annotated[SignedInUser, Depends(require("visit.arrived"))]
# The server pings every console this often, so a dead connection is noticed on both sides.
_PING_S = 15.0


class Credentials(BaseModel):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=256)


class ResolveRequest(BaseModel):
    outcome: str = Field(description=f"one of {list(OUTCOMES)}")
    note: str = Field(
        min_length=1, max_length=2000, description="the closing note: what happened, what was done (required)"
    )


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


@router.post("/api/session", response_model=Me, tags=["session"])
def sign_in(body: Credentials, ctx: Ctx, request: Request, response: Response) -> Me:
    """Sign in; sets an HttpOnly session cookie. Failures slow further tries down (429 with Retry-After)."""
    address = request.client.host if request.client else ""
    wait_s = math.ceil(ctx.limiter.wait_s(body.username, address))
    if wait_s > 0:
        raise HTTPException(
            status_code=429,
            detail=f"too many failed sign-ins; try again in {wait_s} s",
            headers={"Retry-After": str(wait_s)},
        )
    with ctx.sessions.begin() as session:
        user = verify_password(session, body.username, body.password)
        if user is None:
            ctx.limiter.fail(body.username, address)
            raise HTTPException(status_code=401, detail="unknown user name or wrong password")
        token = create_session(session, user.id, ctx.clock_ms(), ctx.session_hours)
        audit.record(session, user, "session.sign_in", now_ms=ctx.clock_ms())
    ctx.limiter.succeed(body.username, address)
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
def sign_out(ctx: Ctx, token: Annotated[str | None, Cookie(alias=COOKIE_NAME)] = None) -> Response:
    """Sign out and forget the session."""
    if token:
        with ctx.sessions.begin() as session:
            end_session(session, token)
    response = Response(status_code=204)
    response.delete_cookie(COOKIE_NAME, path="/")
    return response


@router.get("/api/me", response_model=Me, tags=["session"])
def me(user: CurrentUser) -> Me:
    """Who is signed in."""
    return Me(id=user.id, username=user.username, display_name=user.display_name, role=user.role)


@router.get("/api/alerts", response_model=list[AlertView], tags=["alerts"])
def list_alerts(ctx: Ctx, user: ConsoleUser) -> list[dict[str, Any]]:
    """Every alert not yet resolved, most urgent and oldest first."""
    with ctx.sessions.begin() as session:
        alerts = active_alert_views(session)
        audit.record(session, user, "alert.list", now_ms=ctx.clock_ms(), **_shown(alerts))
    return alerts


def _act(
    ctx: CentralContext, user: SignedInUser, alert_id: int, action: Action, outcome: str | None
) -> dict[str, Any]:
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
    ctx.notify_alerts()
    with ctx.sessions() as session:
        return alert_views(session, [alert_id])[0]


@router.post("/api/alerts/{alert_id}/acknowledge", response_model=AlertView, tags=["alerts"])
def acknowledge(alert_id: PathId, ctx: Ctx, user: ConsoleUser) -> dict[str, Any]:
    """Take an alert: it leaves the open queue and shows who is on it."""
    return _act(ctx, user, alert_id, Action.ACKNOWLEDGE, None)


@router.post("/api/alerts/{alert_id}/resolve", response_model=AlertView, tags=["alerts"])
def resolve(alert_id: PathId, body: ResolveRequest, ctx: Ctx, user: ConsoleUser) -> dict[str, Any]:
    """Close an alert with its outcome and a closing note (409 when another nurse closed it first)."""
    if body.outcome not in OUTCOMES:
        raise Unprocessable(f"outcome must be one of {list(OUTCOMES)}")
    if not body.note.strip():
        raise Unprocessable("a closing note is required: what happened, what was done")
    with ctx.sessions.begin() as session:
        now = ctx.clock_ms()
        alert = resolve_alert(
            session, alert_id=alert_id, actor_id=user.id, now_ms=now, outcome=body.outcome, note=body.note
        )
        audit.record(
            session,
            user,
            "alert.resolve",
            now_ms=now,
            alert_id=alert_id,
            client_id=alert.client_id,
            detail=body.outcome,
        )
    ctx.notify_alerts()
    with ctx.sessions() as session:
        return alert_views(session, [alert_id])[0]


@router.post("/api/alerts/{alert_id}/undo", response_model=AlertView, tags=["alerts"])
def undo(alert_id: PathId, ctx: Ctx, user: ConsoleUser) -> dict[str, Any]:
    """Take back one's own resolve within the undo window (UNDO_WINDOW_MS): the alert is in progress again.
    409 for another nurse's resolve, after the window, or an alert that is not resolved."""
    with ctx.sessions.begin() as session:
        now = ctx.clock_ms()
        alert = undo_resolve(session, alert_id=alert_id, actor_id=user.id, now_ms=now)
        audit.record(session, user, "alert.undo", now_ms=now, alert_id=alert_id, client_id=alert.client_id)
    ctx.notify_alerts()
    with ctx.sessions() as session:
        return alert_views(session, [alert_id])[0]


@router.get("/api/handover", response_model=Handover, tags=["alerts"])
def shift_handover(
    ctx: Ctx,
    user: ConsoleUser,
    since_ms: Annotated[
        int | None, Query(ge=0, description=f"from when (default: the last {DEFAULT_HOURS} h)")
    ] = None,
) -> dict[str, Any]:
    """The shift's alerts for the handover: opened or closed since ``since_ms``, and every one still running,
    with client, times, who, outcome and notes."""
    until = ctx.clock_ms() + 1
    since = since_ms if since_ms is not None else until - DEFAULT_HOURS * 3_600_000
    with ctx.sessions.begin() as session:
        alerts = handover(session, since, until)
        audit.record(session, user, "alert.handover", now_ms=until - 1, **_shown(alerts))
    return {
        "since_ms": since,
        "until_ms": until,
        "undo_window_ms": UNDO_WINDOW_MS,
        "outcomes": list(OUTCOMES),
        "alerts": alerts,
    }


@router.post("/api/alerts/{alert_id}/notes", response_model=AlertNoteView, tags=["alerts"], status_code=201)
def add_alert_note(alert_id: PathId, body: NoteRequest, ctx: Ctx, user: ConsoleUser) -> dict[str, Any]:
    """Add a note to an alert (shown on the client's timeline)."""
    with ctx.sessions.begin() as session:
        note = add_note(session, alert_id=alert_id, user_id=user.id, text=body.text, now_ms=ctx.clock_ms())
        result = {"id": note.id, "alert_id": alert_id, "text": note.text, "at_ms": note.at_ms}
        client_id = session.scalar(select(Alert.client_id).where(Alert.id == alert_id))
        audit.record(session, user, "alert.note", now_ms=note.at_ms, alert_id=alert_id, client_id=client_id)
    ctx.notify_alerts()
    return result


@router.post("/api/alerts/{alert_id}/assign", response_model=AlertView, tags=["alerts"])
def assign_alert(alert_id: PathId, body: AssignRequest, ctx: Ctx, user: ConsoleUser) -> dict[str, Any]:
    """Assign an alert to a colleague (or nobody)."""
    with ctx.sessions.begin() as session:
        if body.user_id is not None and session.get(User, body.user_id) is None:
            raise Unprocessable(f"no user {body.user_id}")
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
    ctx.notify_alerts()
    with ctx.sessions() as session:
        return alert_views(session, [alert_id])[0]


@router.post("/api/alerts/{alert_id}/visits", response_model=VisitSent, tags=["visits"], status_code=201)
def start_visit(alert_id: PathId, body: VisitRequest, ctx: Ctx, user: ConsoleUser) -> dict[str, Any]:
    """Send someone to the client's home; an escalation follows if arrival is not confirmed in time."""
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
    ctx.notify_alerts()
    return result


@router.post("/api/visits/{visit_id}/arrived", response_model=VisitArrived, tags=["visits"])
def visit_arrived(visit_id: PathId, ctx: Ctx, user: ArrivalUser) -> dict[str, Any]:
    """Confirm the visitor is at the client's door."""
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
    ctx.notify_alerts()
    return result


@router.get("/livez", response_model=Liveness, tags=["operations"])
def live_check(ctx: Ctx) -> Liveness:
    """This process is up and reaches the database (for a process supervisor or a load balancer)."""
    try:
        with ctx.sessions() as session:
            session.execute(text("SELECT 1"))
    except Exception as exc:
        raise HTTPException(
            status_code=503, detail=f"database unavailable ({exc.__class__.__name__})"
        ) from None
    return Liveness(status="ok")


@router.get(
    "/healthz",
    response_model=ChainHealthView | Liveness,
    responses={503: {"model": ChainHealthView, "description": "the chain is broken: what is wrong"}},
    tags=["operations"],
)
def health(ctx: Ctx, response: Response) -> ChainHealthView | Liveness:
    """The whole alarm chain: "ok" only when broker, gateway, database, monitor and the end-to-end probe
    all work (503 with the problems otherwise). Without a watchdog in this process: as ``/livez``."""
    watchdog = ctx.watchdog
    if watchdog is None:
        return live_check(ctx)
    response.status_code = 200 if watchdog.health.ok else 503
    return ChainHealthView.model_validate(watchdog.health.as_json())


@router.get("/metrics", response_class=PlainTextResponse, tags=["operations"])
def metrics(ctx: Ctx) -> str:
    """Prometheus metrics of the components running in this process."""
    return "".join(source() for source in ctx.metrics_sources)


@router.websocket("/api/live")
async def live(websocket: WebSocket, ctx: Ctx) -> None:
    """The console's live feed: a snapshot of active alerts, then every change as it happens."""
    user, why = await socket_user(websocket, ctx, CONSOLE)
    if user is None or why is not None:
        code, reason = why or (4401, "not signed in")
        await websocket.close(code=code, reason=reason)
        return
    await websocket.accept()
    queue = ctx.broadcaster.subscribe()
    try:
        # Subscribe first, then read the snapshot: a change in between arrives twice, never zero times,
        # and the console keeps the higher version of each alert. What the subscription first showed is
        # audited once (its later changes are the same alerts, moving).
        await _send_snapshot(websocket, ctx, audited_for=user)
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


async def _send_snapshot(
    websocket: WebSocket, ctx: CentralContext, audited_for: SignedInUser | None = None
) -> None:
    """The active alerts; a subscription's first is on the record (``live.subscribe``) before it is sent."""

    def read() -> list[dict[str, Any]]:
        if audited_for is None:
            with ctx.sessions() as session:
                return active_alert_views(session)
        with ctx.sessions.begin() as session:
            alerts = active_alert_views(session)
            audit.record(session, audited_for, "live.subscribe", now_ms=ctx.clock_ms(), **_shown(alerts))
            return alerts

    alerts = await asyncio.to_thread(read)
    await websocket.send_json({"type": "snapshot", "server_ms": ctx.clock_ms(), "alerts": alerts})
    if ctx.watchdog is not None:
        await websocket.send_json({"type": "health", "health": ctx.watchdog.health.as_json()})


def _shown(alerts: list[dict[str, Any]]) -> dict[str, Any]:
    """The audit row's words for a list of alerts shown: how many, of how many clients (and which one)."""
    clients = {a["client"]["id"] for a in alerts if a.get("client")}
    return {
        "detail": f"{len(alerts)} alerts of {len(clients)} clients",
        "client_id": next(iter(clients)) if len(clients) == 1 else None,
    }
