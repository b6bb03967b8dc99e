"""Management API, the devices' part: provisioning, password rotation, decommissioning, medication schedules.

Who may (see :mod:`central.manage_api` for why): supervisors and admins list and decommission devices and
change schedules; only admins provision devices and rotate their passwords (that creates broker credentials).

A device's broker password is returned once (at provisioning and at each rotation). Each device change is
made in the database, then at the broker through the context's ``device_accounts`` (a
:class:`~central.context.DeviceAccounts`; the runner gives ``messaging.accounts.DynsecAccounts``), which
returns once the broker holds it; the answer says whether it did (``broker_updated``). A schedule change is
sent to the client's dispenser as a ``set_schedule`` command the one way commands go (``care.commands``:
recorded, then published through the context's ``command_sender``) and shows as awaiting confirmation until
the device's cmdack.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, HTTPException
from fastapi import Path as PathParam
from pydantic import BaseModel, Field, field_validator
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from care.alert_store import policy_for, resolve_device_alerts
from care.commands import (
    Outgoing,
    command_state,
    deliver,
    latest_command,
    next_schedule_version,
    prepare_command,
)
from care.doses import replan_client
from protocol.v1 import ProtocolError
from storage.models import Device, MedicationDose
from storage.registry import (
    DEVICE_KINDS,
    RegistryError,
    add_device,
    broker_client_id,
    broker_logins,
    decommission_device,
    rotate_device_password,
)

from .auth import SignedInUser
from .context import CentralContext, DeviceAccounts
from .deps import Ctx, ReadSession, require
from .errors import Conflict, NotFound
from .ids import DEVICE_ID_PATTERN, BodyId, PathId
from .manage_api import Manager, client_or_404

__all__ = ["router"]

log = logging.getLogger(__name__)

router = APIRouter(tags=["management"])

_HHMM = r"^(?:[01][0-9]|2[0-3]):[0-5][0-9]$"
# The protocol's limit: a dispenser holds at most one dose an hour.
_MAX_DOSES = 24

# Provisioning and rotation create broker credentials: admins only.
Admin = Annotated[SignedInUser, Depends(require("device.provision", audit_as="devices"))]
DeviceId = Annotated[
    str, PathParam(pattern=DEVICE_ID_PATTERN, description="the device id (its MQTT user name)")
]


class DeviceBody(BaseModel):
    device_id: str = Field(
        pattern=DEVICE_ID_PATTERN, description="its MQTT user name: 1-64 of A-Z a-z 0-9 _ . : -"
    )
    client_id: BodyId
    kind: str = Field(description=f"one of {', '.join(DEVICE_KINDS)}")
    label: str = Field(default="", max_length=200)


class DeviceView(BaseModel):
    id: str
    client_id: int
    kind: str
    label: str
    online: bool | None
    last_seen_ms: int | None
    battery: int | None
    decommissioned_ms: int | None


class DeviceChange(DeviceView):
    """A device after a change, and whether the broker holds it (None: this API has no broker)."""

    broker_updated: bool | None
    broker_detail: str | None


class DeviceCredentials(DeviceChange):
    """The device's broker credentials: the password is in this answer only (only its hash is kept)."""

    mqtt_username: str
    mqtt_client_id: str | None  # the device's own login is tied to this client id
    # Further logins with the same password, each tied to its user name as client id (a video tablet's
    # endpoint: "{id}/video"; docs/protocol.md §1).
    mqtt_other_logins: list[str] = []
    password: str


def _device_view(device: Device) -> dict[str, Any]:
    return {
        "id": device.id,
        "client_id": device.client_id,
        "kind": device.kind,
        "label": device.label,
        "online": device.online,
        "last_seen_ms": device.last_seen_ms,
        "battery": device.battery,
        "decommissioned_ms": device.decommissioned_ms,
    }


def _credentials_view(device: Device, password: str) -> dict[str, Any]:
    return {
        "mqtt_username": device.id,
        "mqtt_client_id": broker_client_id(device.id, device.kind),
        "mqtt_other_logins": [name for name, _ in broker_logins(device.id, device.kind)[1:]],
        "password": password,
    }


def _tell_broker(ctx: CentralContext, what: str, change: Callable[[DeviceAccounts], None]) -> dict[str, Any]:
    """Make the change at the broker; say whether it holds there (None: this API has no broker)."""
    accounts = ctx.device_accounts
    if accounts is None:
        return {"broker_updated": None, "broker_detail": "no broker is configured for this API"}
    try:
        change(accounts)
    except Exception as exc:  # the port's own errors are the roof's (messaging.accounts); any failure counts
        log.error("manage: the broker was not told of %s: %s", what, exc)
        return {"broker_updated": False, "broker_detail": str(exc)}
    return {"broker_updated": True, "broker_detail": None}


@router.get("/api/manage/devices", response_model=list[DeviceView])
def list_devices(session: ReadSession, _user: Manager) -> list[dict[str, Any]]:
    """Every device with its client and liveness (decommissioned ones too, marked)."""
    return [_device_view(d) for d in session.scalars(select(Device).order_by(Device.id))]


@router.post("/api/manage/devices", status_code=201, response_model=DeviceCredentials)
def provision_device(body: DeviceBody, ctx: Ctx, _user: Admin) -> dict[str, Any]:
    """Provision a device; the broker password is in this answer only (only its hash is kept)."""
    with ctx.sessions.begin() as session:
        device, password = add_device(
            session,
            device_id=body.device_id,
            client_id=body.client_id,
            kind=body.kind,
            label=body.label,
            now_ms=ctx.clock_ms(),
        )
        view = {**_device_view(device), **_credentials_view(device, password)}
        logins = broker_logins(device.id, device.kind)

    def put(b: DeviceAccounts) -> None:
        for username, client_id in logins:
            b.put(username, password, client_id=client_id)

    return {**view, **_tell_broker(ctx, f"new device {device.id}", put)}


@router.post("/api/manage/devices/{device_id}/rotate", response_model=DeviceCredentials)
def rotate_device(device_id: DeviceId, ctx: Ctx, _user: Admin) -> dict[str, Any]:
    """Give a device a new broker password (in this answer only); the broker refuses the old one at once."""
    with ctx.sessions.begin() as session:
        if session.get(Device, device_id) is None:
            raise NotFound(f"no device {device_id}")
        try:
            device, password = rotate_device_password(session, device_id=device_id)
        except RegistryError as exc:  # it exists (above): the registry refuses a decommissioned one
            raise Conflict(str(exc)) from None
        view = {**_device_view(device), **_credentials_view(device, password)}
        logins = broker_logins(device.id, device.kind)

    def rotate(b: DeviceAccounts) -> None:
        for username, client_id in logins:
            b.set_password(username, password, client_id=client_id)

    return {**view, **_tell_broker(ctx, f"the new password of {device_id}", rotate)}


@router.delete("/api/manage/devices/{device_id}", response_model=DeviceChange)
def decommission(device_id: DeviceId, ctx: Ctx, _user: Manager) -> dict[str, Any]:
    """Take a device out of service: the broker refuses it at once (a connected one is disconnected), its
    events and alerts are kept (its open device-state alerts are closed as ``device_removed``; alarms stay
    for a person). Again on a decommissioned device, the broker is told again."""
    with ctx.sessions.begin() as session:
        if session.get(Device, device_id) is None:
            raise NotFound(f"no device {device_id}")
        device, _now = decommission_device(session, device_id=device_id, now_ms=ctx.clock_ms())
        closed = resolve_device_alerts(session, device_id, ctx.clock_ms())
        view = _device_view(device)
        logins = broker_logins(device.id, device.kind)
    if closed:
        ctx.notify_alerts()

    def revoke(b: DeviceAccounts) -> None:
        for username, _client_id in logins:
            b.revoke(username)

    return {**view, **_tell_broker(ctx, f"the removal of {device_id}", revoke)}


# -- medication schedules -----------------------------------------------------------------------------


class DoseBody(BaseModel):
    dose_id: str = Field(
        pattern=DEVICE_ID_PATTERN, description="1-64 of A-Z a-z 0-9 _ . : -, unique in the schedule"
    )
    at: str = Field(pattern=_HHMM, description="HH:MM, the client's local time")
    label: str | None = Field(default=None, max_length=100)

    @field_validator("label")
    @classmethod
    def _blank_is_none(cls, label: str | None) -> str | None:
        """An empty or blank label is no label (the protocol's labels are 1-100 characters)."""
        return (label or "").strip() or None


class ScheduleBody(BaseModel):
    doses: list[DoseBody] = Field(max_length=_MAX_DOSES)

    @field_validator("doses")
    @classmethod
    def _unique(cls, doses: list[DoseBody]) -> list[DoseBody]:
        seen: set[str] = set()
        for dose in doses:
            if dose.dose_id in seen:
                raise ValueError(f"dose_id {dose.dose_id} appears twice")
            seen.add(dose.dose_id)
        return doses


class ScheduleCommand(BaseModel):
    """The last ``set_schedule`` sent to the dispenser, and whether it confirmed it."""

    cmd_id: str | None
    state: str
    sent_ms: int | None
    result_ms: int | None


class ScheduledDose(BaseModel):
    dose_id: str
    at: str
    label: str | None


class ScheduleView(BaseModel):
    client_id: int
    doses: list[ScheduledDose]
    dispenser_id: str | None
    command: ScheduleCommand


def _dispenser(session: Session, client_id: int) -> Device | None:
    return session.scalars(
        select(Device)
        .where(Device.client_id == client_id, Device.kind == "dispenser", Device.decommissioned_ms.is_(None))
        .order_by(Device.created_ms, Device.id)
        .limit(1)
    ).first()


def _schedule_view(session: Session, client_id: int) -> dict[str, Any]:
    doses = session.scalars(
        select(MedicationDose)
        .where(MedicationDose.client_id == client_id)
        .order_by(MedicationDose.at, MedicationDose.dose_id)
    )
    dispenser = _dispenser(session, client_id)
    record = latest_command(session, dispenser.id, "set_schedule") if dispenser else None
    return {
        "client_id": client_id,
        "doses": [{"dose_id": d.dose_id, "at": d.at, "label": d.label or None} for d in doses],
        "dispenser_id": dispenser.id if dispenser else None,
        "command": {
            "cmd_id": record.id if record else None,
            "state": command_state(record) if dispenser else "no_dispenser",
            "sent_ms": record.sent_ms if record else None,
            "result_ms": record.result_ms if record else None,
        },
    }


@router.get("/api/clients/{client_id}/schedule", response_model=ScheduleView)
def get_schedule(client_id: PathId, session: ReadSession, _user: Manager) -> dict[str, Any]:
    """The client's medication schedule and whether the dispenser confirmed the last change."""
    client_or_404(session, client_id)
    return _schedule_view(session, client_id)


@router.put("/api/clients/{client_id}/schedule", response_model=ScheduleView)
def put_schedule(client_id: PathId, body: ScheduleBody, ctx: Ctx, _user: Manager) -> dict[str, Any]:
    """Replace the schedule and send it to the client's dispenser (set_schedule); it then awaits a cmdack."""
    now_ms = ctx.clock_ms()
    outgoing: Outgoing | None = None
    with ctx.sessions.begin() as session:
        client_or_404(session, client_id)
        dispenser = _dispenser(session, client_id)
        session.execute(delete(MedicationDose).where(MedicationDose.client_id == client_id))
        for dose in body.doses:
            session.add(
                MedicationDose(
                    client_id=client_id,
                    device_id=dispenser.id if dispenser else None,
                    dose_id=dose.dose_id,
                    at=dose.at,
                    label=dose.label or "",
                )
            )
        session.flush()
        # The new schedule is watched at once: added doses from their next due time, removed ones cancelled.
        replan_client(
            session,
            client_id,
            now_ms,
            ZoneInfo(ctx.timezone),
            policy_for(session, client_id).dose_grace_s * 1000,
        )
        if dispenser is not None:
            wire = [d.model_dump(exclude_none=True) for d in body.doses]
            args = {"version": next_schedule_version(session, dispenser.id), "doses": wire}
            try:
                outgoing = prepare_command(
                    session, device_id=dispenser.id, command="set_schedule", args=args, now_ms=now_ms
                )
            except ProtocolError as exc:  # the body was validated above: this is a bug, not a bad request
                raise HTTPException(status_code=500, detail=f"schedule not encodable: {exc}") from None
    # Sent only after the commit: the device's cmdack must find the command recorded.
    if outgoing is not None:
        deliver(ctx.sessions, ctx.command_sender, outgoing, ctx.clock_ms())
    with ctx.sessions() as session:
        return _schedule_view(session, client_id)
