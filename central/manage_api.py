"""Management API: clients, devices, medication schedules, duty rosters and users.

Who may do what (the choice, and why):

- supervisors and admins: list and edit clients, list devices and users, change medication schedules and
  the duty roster — the daily running of the care station, done by its supervisors;
- admins only: provision devices (that creates broker credentials) and add users (a supervisor who could
  add users could make themselves an admin).

A new device's broker password is returned once. ``app.state.on_device_added`` (optional), called with
every device's ``(id, password hash)`` after a device is added, lets the embedded broker re-read its
password file. A schedule change is sent to the client's dispenser as a ``set_schedule`` command on the
broker of ``app.state.calls_config.mqtt`` and shows as awaiting confirmation until the device's cmdack.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request, Response
from pydantic import BaseModel, Field, field_validator
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from monitor.doses import replan_client
from monitor.store import policy_for
from protocol.v1 import Command, ProtocolError, encode_command
from storage.models import Client, Device, DutyShift, MedicationDose, User
from storage.registry import (
    DEVICE_KINDS,
    RegistryError,
    add_client,
    add_device,
    add_user,
    device_password_hashes,
)

from .auth import ROLES, SignedInUser, hash_password
from .calls.ring import RingPublisher
from .commands import command_state, latest_command, mark_not_sent, new_command, next_schedule_version
from .ids import BodyId, PathId
from .routes import current_user

__all__ = ["ADMIN_ROLES", "MANAGER_ROLES", "router"]

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
        return [_client_view(c) for c in session.scalars(select(Client).order_by(Client.name, Client.id))]


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


class DeviceBody(BaseModel):
    device_id: str = Field(pattern=_ID, description="its MQTT user name: 1-64 of A-Z a-z 0-9 _ . : -")
    client_id: BodyId
    kind: str = Field(description=f"one of {', '.join(DEVICE_KINDS)}")
    label: str = Field(default="", max_length=200)


def _device_view(device: Device) -> dict[str, Any]:
    return {
        "id": device.id,
        "client_id": device.client_id,
        "kind": device.kind,
        "label": device.label,
        "online": device.online,
        "last_seen_ms": device.last_seen_ms,
        "battery": device.battery,
    }


@router.get("/api/manage/devices")
def list_devices(request: Request, _user: Manager) -> list[dict[str, Any]]:
    """Every device with its client and liveness."""
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
            view = _device_view(device)
            hashes = device_password_hashes(session)
    except RegistryError as exc:
        raise HTTPException(status_code=422, detail=str(exc)) from None
    hook: Callable[[list[tuple[str, str]]], object] | None = getattr(
        request.app.state, "on_device_added", None
    )
    reloaded = None
    if hook is not None:
        try:
            reloaded = bool(hook(hashes))
        except Exception:  # the device exists now; a broker that missed it is fixed by a restart
            log.exception("manage: on_device_added failed for %s", body.device_id)
            reloaded = False
    return {**view, "mqtt_username": device.id, "password": password, "broker_reloaded": reloaded}


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
        .where(Device.client_id == client_id, Device.kind == "dispenser")
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
