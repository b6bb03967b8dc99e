"""Opening a client's record: the reason rule, in one place for every route that reads or changes it.

A route about one client calls :func:`open_record` with the reason given (``GivenReason``): the client
is found (404), kept to the district (403) and, when no alert of the user concerns the client, a reason is
needed (428); the work and its audit row share one transaction, and a refusal is audited as
``<action>.refused``.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable
from typing import Annotated, Final, TypeVar

from fastapi import Depends, Header, HTTPException, Path, Query
from sqlalchemy import exists, or_, select
from sqlalchemy.orm import Session

from storage.models import Alert, Client

from . import audit
from .access import CARE_STATION_ROLES, in_scope
from .auth import SignedInUser
from .context import CentralContext
from .errors import NotFound, Unprocessable
from .ids import MAX_ID

__all__ = [
    "REASON_MAX",
    "REASON_MIN",
    "ClientId",
    "GivenReason",
    "ReasonHeader",
    "ReasonQuery",
    "concerns_user",
    "given_reason",
    "open_record",
]

T = TypeVar("T")

REASON_MIN: Final = 5
REASON_MAX: Final = 500

ClientId = Annotated[int, Path(ge=1, le=MAX_ID, description="the client's opaque id")]
ReasonQuery = Annotated[
    str | None,
    Query(
        min_length=REASON_MIN,
        max_length=REASON_MAX,
        description="why you open a record no alert of yours concerns (else 428)",
    ),
]
ReasonHeader = Annotated[
    str | None,
    Header(
        alias="X-Access-Reason",
        max_length=3 * REASON_MAX,
        description="the reason, percent-encoded UTF-8: keeps it out of URLs and access logs",
    ),
]


def given_reason(reason: ReasonQuery = None, x_access_reason: ReasonHeader = None) -> str | None:
    """The reason given, from the query or the (percent-encoded) header; 422 when too short or long."""
    header = urllib.parse.unquote(x_access_reason) if x_access_reason is not None else None
    text = reason if reason is not None else header
    if text is None:
        return None
    text = text.strip()
    if not REASON_MIN <= len(text) <= REASON_MAX:
        raise Unprocessable(f"a reason is {REASON_MIN} to {REASON_MAX} characters")
    return text


# A route's reason, read from ``?reason=`` or the ``X-Access-Reason`` header (None when neither was sent).
GivenReason = Annotated[str | None, Depends(given_reason)]


def concerns_user(session: Session, user: SignedInUser, client_id: int) -> bool:
    """Whether an alert of the user's concerns the client, so no reason is needed to open the record.

    Theirs: not resolved and acknowledged by or assigned to them. At the care station, any alert still open
    (unanswered) for the client concerns every nurse on duty too.
    """
    active = (Alert.client_id == client_id) & (Alert.state != "resolved")
    mine = or_(Alert.acknowledged_by == user.id, Alert.assigned_to == user.id)
    if session.scalar(select(exists().where(active, mine))):
        return True
    if user.role in CARE_STATION_ROLES:
        return bool(
            session.scalar(select(exists().where(Alert.client_id == client_id, Alert.state == "open")))
        )
    return False


def _gate(
    session: Session, user: SignedInUser, client_id: int, reason: str | None
) -> tuple[Client, tuple[int, str] | None]:
    """The client (404 if none) and, when access is refused, the (status, detail) to answer with."""
    client = session.get(Client, client_id)
    if client is None:
        raise NotFound(f"no client {client_id}")
    if not in_scope(user.role, user.district, client.district):
        return client, (403, f"client {client_id} is outside your district")
    if reason is None and not concerns_user(session, user, client_id):
        return client, (
            428,
            "a reason is needed: no alert of yours concerns this client; "
            f"give it as ?reason= or the X-Access-Reason header ({REASON_MIN}+ characters)",
        )
    return client, None


def open_record(
    ctx: CentralContext,
    user: SignedInUser,
    client_id: int,
    reason: str | None,
    action: str,
    work: Callable[[Session, Client], T],
    detail: str | Callable[[T], str] = "",
) -> T:
    """Gate, do ``work(session, client)`` and audit it, in one transaction; audit a refusal, then raise.

    ``detail`` is the audit row's detail, or a function of the work's result that says what changed.
    """
    result: T
    with ctx.sessions.begin() as session:
        client, refused = _gate(session, user, client_id, reason)
        now = ctx.clock_ms()
        if refused is not None:
            audit.record(
                session, user, f"{action}.refused", now_ms=now, client_id=client_id, detail=refused[1][:80]
            )
        else:
            result = work(session, client)
            said = detail(result) if callable(detail) else detail
            audit.record(session, user, action, now_ms=now, client_id=client_id, reason=reason, detail=said)
    if refused is not None:
        raise HTTPException(status_code=refused[0], detail=refused[1])
    return result
