"""Management API: clients, devices, medication schedules, duty rosters and users.

Who may do what (the choice, and why):

- supervisors and admins: list and edit clients, list devices and users, decommission devices, change
  medication schedules and the duty roster — the daily running of the care station, done by its
  supervisors;
- admins only: provision devices and rotate their passwords (that creates broker credentials) and add users
  (a supervisor who could add users could make themselves an admin).

A device's broker password is returned once (at provisioning and at each rotation). Each device change is
made in the database, then at the broker through ``app.state.device_accounts`` (a ``DeviceAccounts``; the
runner gives ``messaging.accounts.DynsecAccounts``), which returns once the broker holds it; the answer says
whether it did (``broker_updated``). A schedule change is sent to the client's dispenser as a
``set_schedule`` command on the broker of ``app.state.calls_config.mqtt`` and shows as awaiting
confirmation until the device's cmdack.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any, Literal, Protocol
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi import Path as PathParam
from pydantic import BaseModel, Field, field_validator
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from care.alert_store import policy_for, resolve_device_alerts
from care.commands import command_state, latest_command, mark_not_sent, new_command, next_schedule_version
from care.doses import replan_client
from protocol.v1 import Command, ProtocolError, encode_command
from storage.models import Client, Device, DutyShift, MedicationDose, User
from storage.registry import (
    DEVICE_KINDS,
    RegistryError,
    add_client,
    add_device,
    add_user,
    broker_client_id,
    decommission_device,
    rotate_device_password,
)

from .auth import ROLES, SignedInUser, hash_password
from .calls.ring import RingPublisher
from .ids import BodyId, PathId
from .routes import current_user

__all__ = ["ADMIN_ROLES", "MANAGER_ROLES", "DeviceAccounts", "router"]

log = logging.getLogger(__name__)

MANAGER_ROLES = frozenset({"supervisor", "admin"})
ADMIN_ROLES = frozenset({"admin"})
_ID = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"
_HHMM = r"^(?:[01][0-9]|2[0-3]):[0-5][0-9]$"
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
# A shift longer than a day is a typo (a wrong date), not a roster.
_MAX_SHIFT_MS = 24 * 3_600_000
# The protocol's limit: a dispenser holds at most one dose an hour.
_MAX_DOSES = 24


@contextlib.asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Connect a command publisher to the broker the calls use (unless a sender was handed in)."""
    publisher = None
    config = getattr(app.state, "calls_config", None)
    if getattr(app.state, "command_sender", None) is None and config is not None and config.mqtt is not None:
        publisher = RingPublisher(config.mqtt)
        publisher.start()
        app.state.command_sender = publisher.send
    try:
        yield
    finally:
        if publisher is not None:
            app.state.command_sender = None
            publisher.stop()


router = APIRouter(lifespan=_lifespan, tags=["management"])


def _role_check(roles: frozenset[str], what: str) -> Callable[[SignedInUser], SignedInUser]:
    def check(user: Annotated[SignedInUser, Depends(current_user)]) -> SignedInUser:
        if user.role not in roles:
            raise HTTPException(status_code=403, detail=f"the role {user.role} may not {what}")
        return user

    return check


Manager = Annotated[
    SignedInUser, Depends(_role_check(MANAGER_ROLES, "manage the care station (supervisors and admins only)"))
]
Admin = Annotated[SignedInUser, Depends(_role_check(ADMIN_ROLES, "do this (admins only)"))]


def _ctx(request: Request) -> Any:
    return request.app.state.ctx


# -- clients ------------------------------------------------------------------------------------------


class ClientBody(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    address: str = Field(default="", max_length=300)
    district: str = Field(default="", max_length=100)


class ClientPatch(BaseModel):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    address: str | None = Field(default=None, max_length=300)
    district: str | None = Field(default=None, max_length=100)


def _client_view(client: Client) -> dict[str, Any]:
    return {"id": client.id, "name": client.name, "address": client.address, "district": client.district}


@router.get("/api/manage/clients")
def list_clients(request: Request, _user: Manager) -> list[dict[str, Any]]:
    """Every client, by name."""
    with _ctx(request).sessions() as session:
        return [
            _client_view(c)
            for c in session.scalars(
                select(Client).where(Client.system.is_(False)).order_by(Client.name, Client.id)
            )
        ]


@router.post("/api/manage/clients", status_code=201)
def create_client(body: ClientBody, request: Request, _user: Manager) -> dict[str, Any]:
    """Register a client."""
    ctx = _ctx(request)
    with ctx.sessions.begin() as session:
        name = body.name.strip()
        client = add_client(
            session, name=name, address=body.address, district=body.district, now_ms=ctx.clock_ms()
        )
        return _client_view(client)


@router.patch("/api/manage/clients/{client_id}")
def update_client(client_id: PathId, body: ClientPatch, request: Request, _user: Manager) -> dict[str, Any]:
    """Change a client's name, address or district (fields left out stay)."""
    with _ctx(request).sessions.begin() as session:
        client = _client(session, client_id)
        for field, value in body.model_dump(exclude_none=True).items():
            setattr(client, field, value.strip() if field == "name" else value)
        return _client_view(client)


def _client(session: Session, client_id: int) -> Client:
    client = session.get(Client, client_id)
    if client is None:
        raise HTTPException(status_code=404, detail=f"no client {client_id}")
    return client


# -- devices ------------------------------------------------------------------------------------------


class DeviceAccounts(Protocol):
    """The broker's side of a device change; each call returns once the broker holds it, or raises."""

    def put(self, device_id: str, password: str, *, client_id: str | None) -> None: ...

    def set_password(self, device_id: str, password: str, *, client_id: str | None) -> None: ...

    def revoke(self, device_id: str) -> None: ...


class DeviceBody(BaseModel):
    device_id: str = Field(pattern=_ID, description="its MQTT user name: 1-64 of A-Z a-z 0-9 _ . : -")
    client_id: BodyId
    kind: str = Field(description=f"one of {', '.join(DEVICE_KINDS)}")
    label: str = Field(default="", max_length=200)


DeviceId = Annotated[str, PathParam(pattern=_ID, description="the device id (its MQTT user name)")]


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
        "mqtt_client_id": broker_client_id(device.id, device.kind),  # None: any
        "password": password,
    }


def _tell_broker(request: Request, what: str, change: Callable[[DeviceAccounts], None]) -> dict[str, Any]:
    """Make the change at the broker; say whether it holds there (None: this API has no broker)."""
    accounts: DeviceAccounts | None = getattr(request.app.state, "device_accounts", None)
    if accounts is None:
        return {"broker_updated": None, "broker_detail": "no broker is configured for this API"}
    try:
        change(accounts)
    except Exception as exc:  # the port's own errors are the roof's (messaging.accounts); any failure counts
        log.error("manage: the broker was not told of %s: %s", what, exc)
        return {"broker_updated": False, "broker_detail": str(exc)}
    return {"broker_updated": True, "broker_detail": None}


@router.get("/api/manage/devices")
def list_devices(request: Request, _user: Manager) -> list[dict[str, Any]]:
    """Every device with its client and liveness (decommissioned ones too, marked)."""
    with _ctx(request).sessions() as session:
        return [_device_view(d) for d in session.scalars(select(Device).order_by(Device.id))]


@router.post("/api/manage/devices", status_code=201)
def provision_device(body: DeviceBody, request: Request, _user: Admin) -> dict[str, Any]:
    """Provision a device; the broker password is in this answer only (only its hash is kept)."""
    ctx = _ctx(request)
    try:
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
    except RegistryError as exc:
        raise HTTPException(status_code=422, detail=str(exc)) from None
    client_id = view["mqtt_client_id"]
    broker = _tell_broker(
        request, f"new device {device.id}", lambda b: b.put(device.id, password, client_id=client_id)
    )
    return {**view, **broker}


@router.post("/api/manage/devices/{device_id}/rotate")
def rotate_device(device_id: DeviceId, request: Request, _user: Admin) -> dict[str, Any]:
    """Give a device a new broker password (in this answer only); the broker refuses the old one at once."""
    ctx = _ctx(request)
    try:
        with ctx.sessions.begin() as session:
            if session.get(Device, device_id) is None:
                raise HTTPException(status_code=404, detail=f"no device {device_id}")
            device, password = rotate_device_password(session, device_id=device_id)
            view = {**_device_view(device), **_credentials_view(device, password)}
    except RegistryError as exc:  # decommissioned
        raise HTTPException(status_code=409, detail=str(exc)) from None
    client_id = view["mqtt_client_id"]
    broker = _tell_broker(
        request,
        f"the new password of {device_id}",
        lambda b: b.set_password(device_id, password, client_id=client_id),
    )
    return {**view, **broker}


@router.delete("/api/manage/devices/{device_id}")
def decommission(device_id: DeviceId, request: Request, _user: Manager) -> dict[str, Any]:
    """Take a device out of service: the broker refuses it at once (a connected one is disconnected), its
    events and alerts are kept (its open device-state alerts are closed as ``device_removed``; alarms stay
    for a person). Again on a decommissioned device, the broker is told again."""
    ctx = _ctx(request)
    try:
        with ctx.sessions.begin() as session:
            device, _now = decommission_device(session, device_id=device_id, now_ms=ctx.clock_ms())
            closed = resolve_device_alerts(session, device_id, ctx.clock_ms())
            view = _device_view(device)
    except RegistryError as exc:
        raise HTTPException(status_code=404, detail=str(exc)) from None
    if closed:
        ctx.notify_alerts()
    return {**view, **_tell_broker(request, f"the removal of {device_id}", lambda b: b.revoke(device_id))}


# -- medication schedules -----------------------------------------------------------------------------


class DoseBody(BaseModel):
    dose_id: str = Field(pattern=_ID, description="1-64 of A-Z a-z 0-9 _ . : -, unique in the schedule")
    at: str = Field(pattern=_HHMM, description="HH:MM, the client's local time")
    label: str | None = Field(default=None, max_length=100)


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


@router.get("/api/clients/{client_id}/schedule")
def get_schedule(client_id: PathId, request: Request, _user: Manager) -> dict[str, Any]:
    """The client's medication schedule and whether the dispenser confirmed the last change."""
    with _ctx(request).sessions() as session:
        _client(session, client_id)
        return _schedule_view(session, client_id)


@router.put("/api/clients/{client_id}/schedule")
def put_schedule(client_id: PathId, body: ScheduleBody, request: Request, _user: Manager) -> dict[str, Any]:
    """Replace the schedule and send it to the client's dispenser (set_schedule); it then awaits a cmdack."""
    ctx = _ctx(request)
    now_ms = ctx.clock_ms()
    outgoing: tuple[str, str, bytes] | None = None
    with ctx.sessions.begin() as session:
        _client(session, client_id)
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
            record = new_command(
                session, device_id=dispenser.id, command="set_schedule", args=args, now_ms=now_ms
            )
            try:
                payload = encode_command(
                    Command(record.id, now_ms, "set_schedule", tuple(sorted(args.items())))
                )
            except ProtocolError as exc:  # the body was validated above: this is a bug, not a bad request
                raise HTTPException(status_code=500, detail=f"schedule not encodable: {exc}") from None
            outgoing = (record.id, dispenser.id, payload)
    # Sent only after the commit: the device's cmdack must find the command recorded.
    if outgoing is not None:
        cmd_id, device_id, payload = outgoing
        sender: Callable[[str, bytes], bool] | None = getattr(request.app.state, "command_sender", None)
        if sender is None or not sender(device_id, payload):
            log.warning("manage: set_schedule %s for %s not sent (no broker connection)", cmd_id, device_id)
            with ctx.sessions.begin() as session:
                mark_not_sent(session, cmd_id, ctx.clock_ms())
    with ctx.sessions() as session:
        return _schedule_view(session, client_id)


# -- duty roster --------------------------------------------------------------------------------------


class ShiftBody(BaseModel):
    user_id: BodyId
    role: Literal["care_nurse", "supervisor", "district_nurse"]
    district: str = Field(default="", max_length=100)
    starts_ms: int = Field(ge=0)
    ends_ms: int = Field(ge=0)


@router.get("/api/manage/shifts")
def list_shifts(
    request: Request,
    _user: Manager,
    since_ms: Annotated[int | None, Query(ge=0, le=10**15)] = None,
    until_ms: Annotated[int | None, Query(ge=0, le=10**15)] = None,
) -> list[dict[str, Any]]:
    """Shifts that overlap the window (default: from now on), by start."""
    ctx = _ctx(request)
    since = since_ms if since_ms is not None else ctx.clock_ms()
    query = select(DutyShift, User.display_name).join(User, User.id == DutyShift.user_id)
    query = query.where(DutyShift.ends_ms > since)
    if until_ms is not None:
        query = query.where(DutyShift.starts_ms < until_ms)
    with ctx.sessions() as session:
        rows = session.execute(query.order_by(DutyShift.starts_ms, DutyShift.id)).all()
    return [_shift_view(s, name) for s, name in rows]


def _shift_view(shift: DutyShift, name: str) -> dict[str, Any]:
    return {
        "id": shift.id,
        "user_id": shift.user_id,
        "user_name": name,
        "role": shift.role,
        "district": shift.district,
        "starts_ms": shift.starts_ms,
        "ends_ms": shift.ends_ms,
    }


@router.post("/api/manage/shifts", status_code=201)
def add_shift(body: ShiftBody, request: Request, _user: Manager) -> dict[str, Any]:
    """Put someone on the roster."""
    if body.ends_ms <= body.starts_ms:
        raise HTTPException(status_code=422, detail="a shift must end after it starts")
    if body.ends_ms - body.starts_ms > _MAX_SHIFT_MS:
        raise HTTPException(status_code=422, detail="a shift lasts at most 24 hours")
    with _ctx(request).sessions.begin() as session:
        user = session.get(User, body.user_id)
        if user is None:
            raise HTTPException(status_code=422, detail=f"no user {body.user_id}")
        shift = DutyShift(**body.model_dump())
        session.add(shift)
        session.flush()
        return _shift_view(shift, user.display_name)


@router.delete("/api/manage/shifts/{shift_id}", status_code=204)
def delete_shift(shift_id: PathId, request: Request, _user: Manager) -> Response:
    """Take a shift off the roster."""
    with _ctx(request).sessions.begin() as session:
        shift = session.get(DutyShift, shift_id)
        if shift is None:
            raise HTTPException(status_code=404, detail=f"no shift {shift_id}")
        session.delete(shift)
    return Response(status_code=204)


# -- users --------------------------------------------------------------------------------------------


class UserBody(BaseModel):
    username: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$", description="1-64 letters, digits, _.@-"
    )
    display_name: str = Field(min_length=1, max_length=200)
    role: str = Field(description=f"one of {', '.join(ROLES)}")
    district: str = Field(default="", max_length=100)
    email: str | None = Field(default=None, max_length=200)
    password: str = Field(min_length=10, max_length=256, description="at least 10 characters")

    @field_validator("role")
    @classmethod
    def _role(cls, role: str) -> str:
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}")
        return role

    @field_validator("email")
    @classmethod
    def _email(cls, email: str | None) -> str | None:
        if email in (None, ""):
            return None
        if not _EMAIL.fullmatch(email):
            raise ValueError("email must look like name@example.org")
        return email


def _user_view(user: User) -> dict[str, Any]:
    return {
        "id": user.id,
        "username": user.username,
        "display_name": user.display_name,
        "role": user.role,
        "district": user.district,
        "email": user.email,
    }


@router.get("/api/manage/users")
def list_users(request: Request, _user: Manager) -> list[dict[str, Any]]:
    """Every console user (no password hashes), by name."""
    with _ctx(request).sessions() as session:
        return [_user_view(u) for u in session.scalars(select(User).order_by(User.display_name, User.id))]


@router.post("/api/manage/users", status_code=201)
def create_user(body: UserBody, request: Request, _user: Admin) -> dict[str, Any]:
    """Add a console user with a role; the password is stored as an argon2 hash."""
    ctx = _ctx(request)
    try:
        with ctx.sessions.begin() as session:
            user = add_user(
                session,
                username=body.username,
                display_name=body.display_name.strip(),
                role=body.role,
                password_hash=hash_password(body.password),
                district=body.district,
                now_ms=ctx.clock_ms(),
            )
            user.email = body.email
            return _user_view(user)
    except RegistryError as exc:
        raise HTTPException(status_code=422, detail=str(exc)) from None
