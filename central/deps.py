"""The routes' typed dependencies: the context, a database session, the signed-in user, and the permission.

- ``Ctx``: the :class:`~central.context.CentralContext` the app was built with;
- ``ReadSession``: a session for reading, closed when the route returns (work that writes opens
  ``ctx.sessions.begin()`` itself, so it can act after the commit);
- ``AuditedSession``: a read that writes its audit row, committed when the route returns;
- ``CurrentUser``: the user of the session cookie (401 without one);
- ``require("action")``: the signed-in user when :mod:`central.access`'s table lets their role do the
  action and, for a district nurse, the client the path is about (:mod:`central.scope`) is in her district
  (403 otherwise, the refusal audited), used as ``Annotated[SignedInUser, Depends(require("client.read"))]``;
- :func:`socket_user`: the same one check for a WebSocket (which answers with a close code, not a status);
- ``Hub``: the live calls.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Mapping
from typing import Annotated, cast

from fastapi import BackgroundTasks, Cookie, Depends, HTTPException
from sqlalchemy.orm import Session
from starlette.requests import HTTPConnection
from starlette.websockets import WebSocket

from . import audit
from .access import ACTIONS, confined_to, in_scope, may, refusal
from .auth import COOKIE_NAME, SignedInUser, user_for_token
from .calls.signalling import CallHub
from .context import CentralContext
from .scope import client_about

__all__ = [
    "AuditedSession",
    "CurrentUser",
    "Ctx",
    "Hub",
    "ReadSession",
    "Require",
    "context",
    "current_user",
    "refused",
    "require",
    "socket_user",
    "user_of_token",
]


def context(connection: HTTPConnection) -> CentralContext:
    """The context the app was built with (a request's or a WebSocket's)."""
    return cast(CentralContext, connection.app.state.ctx)


Ctx = Annotated[CentralContext, Depends(context)]


def read_session(ctx: Ctx) -> Iterator[Session]:
    with ctx.sessions() as session:
        yield session


# Closed when the route returns, before the answer is sent: on SQLite even a read holds the write lock.
ReadSession = Annotated[Session, Depends(read_session, scope="function")]


def audited_session(ctx: Ctx) -> Iterator[Session]:
    with ctx.sessions.begin() as session:
        yield session


# A read that is audited: the route reads and adds its audit row (central.audit.record) in one transaction,
# committed when the route returns, before the answer is sent (a second session beside a ReadSession would
# wait on SQLite's lock).
AuditedSession = Annotated[Session, Depends(audited_session, scope="function")]


def calls_hub(ctx: Ctx) -> CallHub:
    """The live calls; 503 while the app is not running."""
    if ctx.calls_hub is None:
        raise HTTPException(status_code=503, detail="calls are not running")
    return ctx.calls_hub


Hub = Annotated[CallHub, Depends(calls_hub)]


def user_of_token(ctx: CentralContext, token: str | None) -> SignedInUser | None:
    """The user a session cookie belongs to, if it is valid now (blocking: the database)."""
    if not token:
        return None
    with ctx.sessions() as session:
        return user_for_token(session, token, ctx.clock_ms())


def current_user(ctx: Ctx, token: Annotated[str | None, Cookie(alias=COOKIE_NAME)] = None) -> SignedInUser:
    user = user_of_token(ctx, token)
    if user is None:
        raise HTTPException(status_code=401, detail="not signed in")
    return user


CurrentUser = Annotated[SignedInUser, Depends(current_user)]


def refused(
    ctx: CentralContext, user: SignedInUser, action: str, path_params: Mapping[str, str]
) -> tuple[int, str] | None:
    """Why ``user`` may not do ``action`` on what the path names, as (status, detail); None when allowed.

    The role comes first (the table); then, for a user confined to a district, the client the path is
    about: another district's client is refused and the attempt audited (``<action>.refused``). An id that
    names nothing is let through, so the route answers its own 404 (blocking: the database).
    """
    if not may(user.role, action):
        return 403, refusal(user.role, action)
    if confined_to(user.role, user.district) is None:
        return None
    with ctx.sessions.begin() as session:
        about = client_about(session, path_params)
        if about is None or in_scope(user.role, user.district, about[1]):
            return None
        detail = f"client {about[0]} is outside your district"
        audit.record(
            session, user, f"{action}.refused", now_ms=ctx.clock_ms(), client_id=about[0], detail=detail
        )
    return 403, detail


class Require:
    """The dependency :func:`require` makes; ``action`` names the table's row (the route matrix reads it)."""

    def __init__(self, action: str, audit_as: str | None = None) -> None:
        if action not in ACTIONS:
            raise ValueError(f"unknown action {action}")
        self.action = action
        self.audit_as = audit_as

    def __call__(
        self, connection: HTTPConnection, ctx: Ctx, user: CurrentUser, after: BackgroundTasks
    ) -> SignedInUser:
        why = refused(ctx, user, self.action, connection.path_params)
        if why is not None:
            raise HTTPException(status_code=why[0], detail=why[1])
        if self.audit_as is not None:
            # Written once the route has answered without error (a failed request leaves no row), in a
            # transaction of its own: the route's own session is closed by then.
            method = str(connection.scope.get("method", "GET"))
            route = getattr(connection.scope.get("route"), "path", connection.url.path)
            action = f"{self.audit_as}.{'read' if method == 'GET' else 'change'}"
            after.add_task(
                _audit_route, ctx, user, action, ctx.clock_ms(), f"{method} {route}", connection.path_params
            )
        return user


def _audit_route(
    ctx: CentralContext,
    user: SignedInUser,
    action: str,
    now_ms: int,
    what: str,
    path_params: Mapping[str, str],
) -> None:
    with ctx.sessions.begin() as session:
        about = client_about(session, path_params)
        audit.record(session, user, action, now_ms=now_ms, client_id=about[0] if about else None, detail=what)


def require(action: str, *, audit_as: str | None = None) -> Require:
    """A dependency: the signed-in user, when the policy lets them do ``action`` here; else 403.

    With ``audit_as``, a route that answers without error writes one audit row ``<audit_as>.read`` (GET) or
    ``<audit_as>.change``, naming the route and the client its path is about: for routes that keep no audit
    of their own.
    """
    return Require(action, audit_as)


async def socket_user(
    websocket: WebSocket, ctx: CentralContext, action: str
) -> tuple[SignedInUser | None, tuple[int, str] | None]:
    """A WebSocket's signed-in user and, when refused, (close code, reason): 4401 anonymous, 4403 refused.

    The same check as :func:`require`, by the same table and the same district rule.
    """
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action}")
    user = await asyncio.to_thread(user_of_token, ctx, websocket.cookies.get(COOKIE_NAME))
    if user is None:
        return None, (4401, "not signed in")
    why = await asyncio.to_thread(refused, ctx, user, action, websocket.path_params)
    return user, None if why is None else (4403, why[1])
