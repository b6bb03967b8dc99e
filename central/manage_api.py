"""Management API: clients, duty rosters and users (devices and schedules: :mod:`central.devices_api`).

Who may do what (the choice, and why; the rows are in :mod:`central.access`):

- supervisors and admins (``station.manage``): list and edit clients, list devices and users, decommission
  devices, change medication schedules and the duty roster — the daily running of the care station, done
  by its supervisors;
- admins only: provision devices and rotate their passwords (``device.provision``: that creates broker
  credentials) and add, deactivate and re-activate users and reset their passwords (``user.manage``: a
  supervisor who could add users could make themselves an admin, and one who could reset passwords could
  sign in as one).

Passwords follow :func:`central.passwords.password_problem` (length, not common or breached, not the user
name). Deactivating a user or resetting a password ends every session of that user at once.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Response
from pydantic import BaseModel, Field, field_validator, model_validator
from sqlalchemy import select
from sqlalchemy.orm import Session

from storage.models import Client, DutyShift, User
from storage.registry import add_client, add_user

from .auth import ROLES, SignedInUser, disable_user, enable_user, hash_password, reset_password
from .deps import Ctx, ReadSession, require
from .errors import NotFound, Unprocessable
from .ids import BodyId, PathId
from .passwords import MAX_LENGTH, MIN_LENGTH, password_problem

__all__ = ["Manager", "client_or_404", "router"]

router = APIRouter(tags=["management"])

Manager = Annotated[SignedInUser, Depends(require("station.manage", audit_as="station"))]
UserAdmin = Annotated[SignedInUser, Depends(require("user.manage", audit_as="users"))]

_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
# A shift longer than a day is a typo (a wrong date), not a roster.
_MAX_SHIFT_MS = 24 * 3_600_000


# -- clients ------------------------------------------------------------------------------------------


class ClientBody(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    address: str = Field(default="", max_length=300)
    district: str = Field(default="", max_length=100)


class ClientPatch(BaseModel):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    address: str | None = Field(default=None, max_length=300)
    district: str | None = Field(default=None, max_length=100)


class ClientView(BaseModel):
    id: int
    name: str
    address: str
    district: str


def _client_view(client: Client) -> dict[str, Any]:
    return {"id": client.id, "name": client.name, "address": client.address, "district": client.district}


@router.get("/api/manage/clients", response_model=list[ClientView])
def list_clients(session: ReadSession, _user: Manager) -> list[dict[str, Any]]:
    """Every client, by name."""
    return [
        _client_view(c)
        for c in session.scalars(
            select(Client).where(Client.system.is_(False)).order_by(Client.name, Client.id)
        )
    ]


@router.post("/api/manage/clients", status_code=201, response_model=ClientView)
def create_client(body: ClientBody, ctx: Ctx, _user: Manager) -> dict[str, Any]:
    """Register a client."""
    with ctx.sessions.begin() as session:
        name = body.name.strip()
        client = add_client(
            session, name=name, address=body.address, district=body.district, now_ms=ctx.clock_ms()
        )
        return _client_view(client)


@router.patch("/api/manage/clients/{client_id}", response_model=ClientView)
def update_client(client_id: PathId, body: ClientPatch, ctx: Ctx, _user: Manager) -> dict[str, Any]:
    """Change a client's name, address or district (fields left out stay)."""
    with ctx.sessions.begin() as session:
        client = client_or_404(session, client_id)
        for field, value in body.model_dump(exclude_none=True).items():
            setattr(client, field, value.strip() if field == "name" else value)
        return _client_view(client)


def client_or_404(session: Session, client_id: int) -> Client:
    """The client, or :class:`~central.errors.NotFound`."""
    client = session.get(Client, client_id)
    if client is None:
        raise NotFound(f"no client {client_id}")
    return client


# -- duty roster --------------------------------------------------------------------------------------


class ShiftBody(BaseModel):
    user_id: BodyId
    role: Literal["care_nurse", "supervisor", "district_nurse"]
    district: str = Field(default="", max_length=100)
    starts_ms: int = Field(ge=0)
    ends_ms: int = Field(ge=0)


class ShiftView(BaseModel):
    id: int
    user_id: int
    user_name: str
    role: str
    district: str
    starts_ms: int
    ends_ms: int


@router.get("/api/manage/shifts", response_model=list[ShiftView])
def list_shifts(
    ctx: Ctx,
    session: ReadSession,
    _user: Manager,
    since_ms: Annotated[int | None, Query(ge=0, le=10**15)] = None,
    until_ms: Annotated[int | None, Query(ge=0, le=10**15)] = None,
) -> list[dict[str, Any]]:
    """Shifts that overlap the window (default: from now on), by start."""
    since = since_ms if since_ms is not None else ctx.clock_ms()
    query = select(DutyShift, User.display_name).join(User, User.id == DutyShift.user_id)
    query = query.where(DutyShift.ends_ms > since)
    if until_ms is not None:
        query = query.where(DutyShift.starts_ms < until_ms)
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


@router.post("/api/manage/shifts", status_code=201, response_model=ShiftView)
def add_shift(body: ShiftBody, ctx: Ctx, _user: Manager) -> dict[str, Any]:
    """Put someone on the roster."""
    if body.ends_ms <= body.starts_ms:
        raise Unprocessable("a shift must end after it starts")
    if body.ends_ms - body.starts_ms > _MAX_SHIFT_MS:
        raise Unprocessable("a shift lasts at most 24 hours")
    with ctx.sessions.begin() as session:
        user = session.get(User, body.user_id)
        if user is None:
            raise Unprocessable(f"no user {body.user_id}")
        shift = DutyShift(**body.model_dump())
        session.add(shift)
        session.flush()
        return _shift_view(shift, user.display_name)


@router.delete("/api/manage/shifts/{shift_id}", status_code=204)
def delete_shift(shift_id: PathId, ctx: Ctx, _user: Manager) -> Response:
    """Take a shift off the roster."""
    with ctx.sessions.begin() as session:
        shift = session.get(DutyShift, shift_id)
        if shift is None:
            raise NotFound(f"no shift {shift_id}")
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
    password: str = Field(
        max_length=MAX_LENGTH,
        description=f"at least {MIN_LENGTH} characters, not a common password, not the user name",
    )

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

    @model_validator(mode="after")
    def _password(self) -> UserBody:
        problem = password_problem(self.password, username=self.username)
        if problem:
            raise ValueError(problem)
        return self


class PasswordBody(BaseModel):
    password: str = Field(
        max_length=MAX_LENGTH,
        description=f"at least {MIN_LENGTH} characters, not a common password, not the user name",
    )


class UserView(BaseModel):
    id: int
    username: str
    display_name: str
    role: str
    district: str
    email: str | None
    active: bool = Field(description="false: deactivated (cannot sign in)")


def _user_view(user: User) -> dict[str, Any]:
    return {
        "id": user.id,
        "username": user.username,
        "display_name": user.display_name,
        "role": user.role,
        "district": user.district,
        "email": user.email,
        "active": user.disabled_ms is None,
    }


@router.get("/api/manage/users", response_model=list[UserView])
def list_users(session: ReadSession, _user: Manager) -> list[dict[str, Any]]:
    """Every console user (no password hashes), by name."""
    return [_user_view(u) for u in session.scalars(select(User).order_by(User.display_name, User.id))]


@router.post("/api/manage/users", status_code=201, response_model=UserView)
def create_user(body: UserBody, ctx: Ctx, _user: UserAdmin) -> dict[str, Any]:
    """Add a console user with a role; the password is stored as an argon2 hash."""
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


def _user_or_404(session: Session, user_id: int) -> User:
    user = session.get(User, user_id)
    if user is None:
        raise NotFound(f"no user {user_id}")
    return user


@router.post("/api/manage/users/{user_id}/deactivate", response_model=UserView)
def deactivate_user(user_id: PathId, ctx: Ctx, admin: UserAdmin) -> dict[str, Any]:
    """Deactivate a user: their sign-in is refused and every session of theirs ends now."""
    if user_id == admin.id:
        raise Unprocessable("you cannot deactivate yourself")
    with ctx.sessions.begin() as session:
        user = _user_or_404(session, user_id)
        disable_user(session, user, ctx.clock_ms())
        return _user_view(user)


@router.post("/api/manage/users/{user_id}/activate", response_model=UserView)
def activate_user(user_id: PathId, ctx: Ctx, _user: UserAdmin) -> dict[str, Any]:
    """Let a deactivated user sign in again."""
    with ctx.sessions.begin() as session:
        user = _user_or_404(session, user_id)
        enable_user(user)
        return _user_view(user)


@router.put("/api/manage/users/{user_id}/password", status_code=204)
def set_user_password(user_id: PathId, body: PasswordBody, ctx: Ctx, _user: UserAdmin) -> Response:
    """Reset a user's password (tell them out of band); every session of theirs ends now."""
    with ctx.sessions.begin() as session:
        user = _user_or_404(session, user_id)
        problem = password_problem(body.password, username=user.username)
        if problem:
            raise Unprocessable(problem)
        reset_password(session, user, body.password)
    return Response(status_code=204)
