"""The routes' typed dependencies: the context, a database session, the signed-in user, and the permission.

- ``Ctx``: the :class:`~central.context.CentralContext` the app was built with;
- ``ReadSession``: a session for reading, closed when the route returns (work that writes opens
  ``ctx.sessions.begin()`` itself, so it can act after the commit);
- ``CurrentUser``: the user of the session cookie (401 without one);
- ``require("action")``: the signed-in user when :mod:`central.access`'s table lets their role do the
  action (403 otherwise), used as ``Annotated[SignedInUser, Depends(require("client.read"))]``;
- ``Hub``: the live calls.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Annotated, cast

from fastapi import Cookie, Depends, HTTPException
from sqlalchemy.orm import Session
from starlette.requests import HTTPConnection

from .access import ACTIONS, may, refusal
from .auth import COOKIE_NAME, SignedInUser, user_for_token
from .calls.signalling import CallHub
from .context import CentralContext

__all__ = [
    "CurrentUser",
    "Ctx",
    "Hub",
    "ReadSession",
    "context",
    "current_user",
    "require",
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


def require(action: str) -> Callable[[SignedInUser], SignedInUser]:
    """A dependency: the signed-in user, when the table lets their role do ``action``; else 403."""
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action}")

    def guard(user: CurrentUser) -> SignedInUser:
        if not may(user.role, action):
            raise HTTPException(status_code=403, detail=refusal(user.role, action))
        return user

    guard.__name__ = f"require_{action.replace('.', '_')}"
    return guard
