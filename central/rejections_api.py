"""Recent rejections over HTTP: what the gateway refused from each device, for the management page.

Who may (the choice, and why): supervisors and admins, the roles of every other management route
(``station.manage`` in :mod:`central.access`). A refused message says a device is broken, misconfigured
or hostile: fixing that is the running of the service, not the answering of alarms, and a dead letter's
first bytes are whatever the device sent. Care and district nurses are refused (403).

What is shown is bounded: a window of at most 30 days (default the last 24 hours; an earlier ``since`` is
cut to 30 days), at most ``MAX_DEVICES`` devices (those refused most recently first), at most
``MAX_LATEST`` rows per device, and of each row a printable preview of its first ``PREVIEW_BYTES`` bytes.
The counts by reason include the refusals the gateway only counted (beyond its hourly cap per device,
``gateway.ingest.bound_dead_letters``): a summary row stands for ``refusals`` of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, Final

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel
from sqlalchemy import LargeBinary, func, or_, select
from sqlalchemy.orm import Session

from storage.models import DeadLetter

from . import audit
from .auth import SignedInUser
from .deps import AuditedSession, Ctx, require
from .ids import DEVICE_ID_PATTERN, MAX_ID

__all__ = ["MAX_DEVICES", "MAX_LATEST", "PREVIEW_BYTES", "preview", "recent_rejections", "router"]

router = APIRouter(tags=["management"])
# The station's managers (central.access); the route writes its own audit row (rejections.read).
Manager = Annotated[SignedInUser, Depends(require("station.manage"))]

_DAY_MS: Final = 24 * 3_600_000
# A month covers "since the last firmware update"; further back the rows are history, not a fault to fix.
MAX_WINDOW_MS: Final = 30 * _DAY_MS
# One page: more devices than a supervisor reads at once, few enough to stay one small response.
MAX_DEVICES: Final = 100
MAX_LATEST: Final = 50
# Enough to recognise a payload ('{"msg_id":…', a JPEG header, a shell prompt) without showing all of it.
PREVIEW_BYTES: Final = 64


def preview(payload: bytes, limit: int = PREVIEW_BYTES) -> str:
    """The first bytes of a payload as printable ASCII: every other byte shown as '.', like hexdump -C."""
    return "".join(chr(b) if 0x20 <= b < 0x7F else "." for b in payload[:limit])


@dataclass
class DeviceRejections:
    device_id: str | None
    by_reason: dict[str, int] = field(default_factory=dict)
    latest_ms: int = 0
    latest: list[dict[str, Any]] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.by_reason.values())


def recent_rejections(
    session: Session, *, since_ms: int, device_id: str | None, limit: int
) -> tuple[list[DeviceRejections], int]:
    """Per device refused since ``since_ms`` (the most recent first): counts by reason, the newest rows.

    Returns at most ``MAX_DEVICES`` devices, and how many devices were refused in the window in all.
    """
    window = [DeadLetter.received_ms >= since_ms]
    if device_id is not None:
        window.append(DeadLetter.device_id == device_id)
    counts = session.execute(
        select(
            DeadLetter.device_id,
            DeadLetter.reason,
            func.sum(DeadLetter.refusals),
            func.max(DeadLetter.received_ms),
        )
        .where(*window)
        .group_by(DeadLetter.device_id, DeadLetter.reason)
    )
    devices: dict[str | None, DeviceRejections] = {}
    for device, reason, refusals, newest in counts:
        entry = devices.setdefault(device, DeviceRejections(device))
        entry.by_reason[reason] = int(refusals)
        entry.latest_ms = max(entry.latest_ms, int(newest))
    shown = sorted(devices.values(), key=lambda d: (-d.latest_ms, d.device_id or ""))[:MAX_DEVICES]
    if not shown:
        return [], 0
    rank = (
        func.row_number()
        .over(
            partition_by=DeadLetter.device_id, order_by=(DeadLetter.received_ms.desc(), DeadLetter.id.desc())
        )
        .label("rank")
    )
    named = DeadLetter.device_id.in_([d.device_id for d in shown if d.device_id is not None])
    # Refusals on a topic without a valid device id are grouped under no device (null).
    of_shown = (
        or_(named, DeadLetter.device_id.is_(None)) if any(d.device_id is None for d in shown) else named
    )
    ranked = (
        select(
            DeadLetter.device_id,
            DeadLetter.received_ms,
            DeadLetter.topic,
            DeadLetter.reason,
            DeadLetter.detail,
            DeadLetter.payload_size,
            DeadLetter.payload_sha256,
            DeadLetter.refusals,
            func.substr(DeadLetter.payload, 1, PREVIEW_BYTES, type_=LargeBinary).label("head"),
            rank,
        )
        .where(*window, of_shown)
        .subquery()
    )
    rows = session.execute(
        select(ranked)
        .where(ranked.c.rank <= limit)
        .order_by(ranked.c.device_id, ranked.c.received_ms.desc(), ranked.c.rank)
    )
    for row in rows:
        devices[row.device_id].latest.append(
            {
                "received_ms": row.received_ms,
                "topic": row.topic,
                "reason": row.reason,
                "detail": row.detail,
                "size": row.payload_size,
                "sha256": row.payload_sha256,
                "refusals": row.refusals,
                # A summary row (refusals only counted) keeps no payload: no preview, not an empty one.
                "preview": preview(bytes(row.head or b"")) if row.payload_size is not None else None,
            }
        )
    return shown, len(devices)


class Rejection(BaseModel):
    received_ms: int
    topic: str
    reason: str
    detail: str
    size: int | None
    sha256: str | None
    refusals: int
    preview: str | None  # None: a summary row (refusals only counted) keeps no payload


class DeviceRejectionsView(BaseModel):
    device_id: str | None  # None: refusals on a topic without a valid device id
    total: int
    by_reason: dict[str, int]
    latest_ms: int
    latest: list[Rejection]


class RejectionsView(BaseModel):
    now_ms: int
    since_ms: int
    devices_refused: int
    devices: list[DeviceRejectionsView]


@router.get("/api/rejections", response_model=RejectionsView)
def get_rejections(
    ctx: Ctx,
    session: AuditedSession,
    user: Manager,
    device_id: Annotated[
        str | None, Query(pattern=DEVICE_ID_PATTERN, description="one device's rejections")
    ] = None,
    since: Annotated[
        int | None,
        Query(
            ge=0,
            le=MAX_ID,
            description="from this time (ms since the epoch); default 24 h ago, at most 30 days ago",
        ),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LATEST, description="newest rows per device")] = 5,
) -> dict[str, Any]:
    """Per device refused in the window, most recent first: counts by reason and the newest rows."""
    now = ctx.clock_ms()
    # Further back than the window is cut to it (the answer says which ``since_ms`` was used): a browser
    # whose clock runs a little behind must still get "the last 30 days".
    since_ms = max(now - _DAY_MS if since is None else since, now - MAX_WINDOW_MS)
    shown, refused_devices = recent_rejections(session, since_ms=since_ms, device_id=device_id, limit=limit)
    # What devices sent can be a client's data (a dose, an alarm): reading it is on the record.
    audit.record(
        session, user, "rejections.read", now_ms=now, detail=f"device_id={device_id} {len(shown)} devices"
    )
    return {
        "now_ms": now,
        "since_ms": since_ms,
        "devices_refused": refused_devices,  # more than len(devices) when the list was cut at MAX_DEVICES
        "devices": [
            {
                "device_id": d.device_id,
                "total": d.total,
                "by_reason": dict(sorted(d.by_reason.items())),
                "latest_ms": d.latest_ms,
                "latest": d.latest,
            }
            for d in shown
        ],
    }
