"""The audit log: one row for every read of a client's record and every action, and its query.

``record`` adds the row to the caller's session, so it commits (or rolls back) with the work it audits;
``write`` stores one on its own (a live feed's subscription, a monitoring session's start and end, which
have no transaction of their own to join). ``csv_rows`` is the log as a spreadsheet.
Application log lines name users and clients by id only, never by name.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from storage.db import SessionFactory
from storage.models import User
from storage.records_models import AuditEntry

from .auth import SignedInUser

__all__ = ["CSV_COLUMNS", "AuditQuery", "csv_rows", "query", "record", "write"]

log = logging.getLogger(__name__)

# The columns' widths (storage.records_models): longer text is cut rather than refused.
_REASON_CHARS = 500
_DETAIL_CHARS = 500


def record(
    session: Session,
    user: SignedInUser | int,
    action: str,
    *,
    now_ms: int,
    client_id: int | None = None,
    alert_id: int | None = None,
    reason: str | None = None,
    detail: str = "",
) -> AuditEntry:
    """Add one audit row for ``user`` (or a user id) doing ``action`` (``client.read``, ``alert.resolve``)."""
    user_id = user if isinstance(user, int) else user.id
    entry = AuditEntry(
        at_ms=now_ms,
        user_id=user_id,
        action=action,
        client_id=client_id,
        alert_id=alert_id,
        reason=reason[:_REASON_CHARS] if reason else None,
        detail=detail[:_DETAIL_CHARS],
    )
    session.add(entry)
    log.info("audit: user %d %s client=%s alert=%s", user_id, action, client_id, alert_id)
    return entry


def write(
    sessions: SessionFactory,
    user: SignedInUser | int,
    action: str,
    now_ms: int,
    *,
    client_id: int | None = None,
    alert_id: int | None = None,
    reason: str | None = None,
    detail: str = "",
) -> None:
    """Store one audit row in a transaction of its own (blocking: the database)."""
    with sessions.begin() as session:
        record(
            session,
            user,
            action,
            now_ms=now_ms,
            client_id=client_id,
            alert_id=alert_id,
            reason=reason,
            detail=detail,
        )


@dataclass(frozen=True, slots=True)
class AuditQuery:
    """Filters of the audit log; ``before_id`` pages backwards (newest first)."""

    user_id: int | None = None
    client_id: int | None = None
    action: str | None = None
    since_ms: int | None = None
    until_ms: int | None = None
    before_id: int | None = None
    limit: int = 100


def query(session: Session, q: AuditQuery) -> tuple[list[dict[str, Any]], int | None]:
    """The rows matching ``q``, newest first, and the ``before_id`` of the next page (None at the end)."""
    stmt = select(AuditEntry, User.username, User.display_name, User.role).join(
        User, User.id == AuditEntry.user_id
    )
    if q.user_id is not None:
        stmt = stmt.where(AuditEntry.user_id == q.user_id)
    if q.client_id is not None:
        stmt = stmt.where(AuditEntry.client_id == q.client_id)
    if q.action:
        # "client." matches every client action; "client.read" only that one.
        stmt = stmt.where(
            AuditEntry.action.startswith(q.action, autoescape=True)
            if q.action.endswith(".")
            else AuditEntry.action == q.action
        )
    if q.since_ms is not None:
        stmt = stmt.where(AuditEntry.at_ms >= q.since_ms)
    if q.until_ms is not None:
        stmt = stmt.where(AuditEntry.at_ms < q.until_ms)
    if q.before_id is not None:
        stmt = stmt.where(AuditEntry.id < q.before_id)
    rows = session.execute(stmt.order_by(AuditEntry.id.desc()).limit(q.limit + 1)).all()
    items: list[dict[str, Any]] = [
        {
            "id": entry.id,
            "at_ms": entry.at_ms,
            "user_id": entry.user_id,
            "username": username,
            "user_name": display_name,
            "user_role": role,
            "action": entry.action,
            "client_id": entry.client_id,
            "alert_id": entry.alert_id,
            "reason": entry.reason,
            "detail": entry.detail,
        }
        for entry, username, display_name, role in rows[: q.limit]
    ]
    next_before = items[-1]["id"] if len(rows) > q.limit else None
    return items, next_before


# The CSV export's columns, in order (the JSON page's keys).
CSV_COLUMNS = (
    "id",
    "at_ms",
    "at_utc",
    "user_id",
    "username",
    "user_name",
    "user_role",
    "action",
    "client_id",
    "alert_id",
    "reason",
    "detail",
)
# Spreadsheets run cells that start with these as formulas; a reason or a search text must not.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: object) -> object:
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return "" if value is None else value


def csv_rows(items: list[dict[str, Any]]) -> list[list[object]]:
    """The rows of :func:`query` as CSV cells (a header first), formulas neutralised, times also in UTC."""
    rows: list[list[object]] = [list(CSV_COLUMNS)]
    for item in items:
        at = datetime.fromtimestamp(item["at_ms"] / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")
        rows.append([_cell(at if column == "at_utc" else item[column]) for column in CSV_COLUMNS])
    return rows
