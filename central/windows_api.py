"""Maintenance windows over HTTP: create, list and end them (the rules are in :mod:`care.windows`).

Who may (the choice, and why): the care station — care-station nurses, supervisors and admins. A window
changes what reaches the care station's queue, and the nurse on duty is the one the family phones with
"mother is in hospital since this morning"; she must be able to act at night without waiting for a
supervisor. The damage a wrong window can do is bounded: it never quiets an alarm, it lasts at most 30
days, every window shows on the console while it runs, and creating or ending one is audited. District
nurses work from the client page, not the console's queue, and are refused (403).

The permission comes from the one role table, :mod:`central.access`, through ``require``. That table has
no rows of its own for windows yet, so these routes use the care-station actions that name exactly the roles
chosen above: seeing windows goes with seeing the queue (``alert.list``); creating and ending one — keeping
alerts off the queue — goes with taking alerts off it (``alert.acknowledge``). Once ``window.*`` rows exist
in ``ACTIONS``, only the two names below change.

The domain's errors become HTTP in ``create_app`` (:mod:`central.errors`): a rule broken or an unknown
client/device 422, no such window 404, a window that is over 409.
"""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field
from sqlalchemy import select

from care.windows import WindowInfo, create_window, end_window, list_windows
from storage.models import Client, Device

from . import audit
from .auth import SignedInUser
from .deps import AuditedSession, Ctx, require
from .ids import DEVICE_ID_PATTERN, MAX_ID, BodyId, PathId
from .schemas import WindowList, WindowTargets, WindowView

__all__ = ["router", "window_view"]

router = APIRouter(tags=["maintenance windows"])

# See the module docstring: the care-station actions whose roles are the ones chosen for windows.
READ_ACTION: Final = "alert.list"
WRITE_ACTION: Final = "alert.acknowledge"
ReadUser = Annotated[SignedInUser, Depends(require(READ_ACTION))]
WriteUser = Annotated[SignedInUser, Depends(require(WRITE_ACTION))]

# The console's form lists clients in a select: enough for a large care station, bounded all the same.
_MAX_TARGETS: Final = 5000


class WindowRequest(BaseModel):
    client_id: BodyId | None = Field(default=None, description="a window for the whole client …")
    device_id: str | None = Field(
        default=None, pattern=DEVICE_ID_PATTERN, description="… or for one device (give exactly one)"
    )
    starts_ms: int | None = Field(
        default=None, ge=0, le=MAX_ID, description="start (ms since the epoch); default and earliest: now"
    )
    ends_ms: int = Field(ge=0, le=MAX_ID, description="end (ms since the epoch); at most 30 days after start")
    reason: str = Field(min_length=1, max_length=200, description="why, e.g. 'in hospital'")


def window_view(info: WindowInfo) -> dict[str, Any]:
    """A window as the API and the console show it."""
    return {
        "id": info.id,
        "client": {"id": info.client_id, "name": info.client_name},
        "device": {"id": info.device_id, "label": info.device_label, "kind": info.device_kind}
        if info.device_id is not None
        else None,
        "starts_ms": info.starts_ms,
        "ends_ms": info.ends_ms,
        "reason": info.reason,
        "state": info.state,
        "created_ms": info.created_ms,
        "created_by": info.created_by,
        "ended_by": info.ended_by,
        "suppressed": info.suppressed,
    }


@router.get("/api/windows", response_model=WindowList)
def get_windows(
    ctx: Ctx,
    session: AuditedSession,
    user: ReadUser,
    which: Annotated[
        Literal["current", "active", "upcoming", "past", "all"],
        Query(description="current (default): running and upcoming"),
    ] = "current",
    client_id: Annotated[int | None, Query(ge=1, le=MAX_ID, description="one client's windows")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> dict[str, Any]:
    """Maintenance windows: running ones ending soonest first, then upcoming, then past newest first."""
    now = ctx.clock_ms()
    items = list_windows(session, now_ms=now, which=which, client_id=client_id, limit=limit)
    audit.record(
        session,
        user,
        "windows.list",
        now_ms=now,
        client_id=client_id,
        detail=f"{which}: {len(items)} windows",
    )
    return {"now_ms": now, "items": [window_view(i) for i in items]}


@router.get("/api/windows/targets", response_model=WindowTargets)
def get_targets(ctx: Ctx, user: WriteUser) -> dict[str, Any]:
    """What a window can be for: every client by name, with their devices (for the console's form)."""
    with ctx.sessions.begin() as session:
        clients = session.scalars(
            select(Client)
            .where(Client.system.is_(False))
            .order_by(Client.name, Client.id)
            .limit(_MAX_TARGETS)
        ).all()
        devices: dict[int, list[dict[str, Any]]] = {}
        ids = [c.id for c in clients]
        for d in session.scalars(select(Device).where(Device.client_id.in_(ids)).order_by(Device.id)):
            devices.setdefault(d.client_id, []).append({"id": d.id, "label": d.label, "kind": d.kind})
        audit.record(session, user, "window.targets", now_ms=ctx.clock_ms(), detail=f"{len(clients)} listed")
    return {
        "clients": [{"id": c.id, "name": c.name, "devices": devices.get(c.id, [])} for c in clients],
    }


@router.post("/api/windows", status_code=201, response_model=WindowView)
def post_window(body: WindowRequest, ctx: Ctx, user: WriteUser) -> dict[str, Any]:
    """Start (or plan) a window: the client's or device's device-state and dose alerts are held back and
    recorded; alarms always come through."""
    with ctx.sessions.begin() as session:
        now = ctx.clock_ms()
        info = create_window(
            session,
            client_id=body.client_id,
            device_id=body.device_id,
            starts_ms=body.starts_ms,
            ends_ms=body.ends_ms,
            reason=body.reason,
            user_id=user.id,
            now_ms=now,
        )
        audit.record(
            session,
            user,
            "window.create",
            now_ms=now,
            client_id=info.client_id,
            detail=f"window {info.id}",
        )
    return window_view(info)


@router.post("/api/windows/{window_id}/end", response_model=WindowView)
def post_end(window_id: PathId, ctx: Ctx, user: WriteUser) -> dict[str, Any]:
    """End a running window now (or cancel one not yet started): alerts are raised again from now on."""
    with ctx.sessions.begin() as session:
        now = ctx.clock_ms()
        info = end_window(session, window_id=window_id, user_id=user.id, now_ms=now)
        audit.record(
            session, user, "window.end", now_ms=now, client_id=info.client_id, detail=f"window {info.id}"
        )
    return window_view(info)
