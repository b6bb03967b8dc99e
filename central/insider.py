"""Unusual access: one person opening many client records that no alert of theirs concerned.

A nurse may open any client's record, but where no alert of hers concerns the client she must give a reason,
and the audit log keeps it (``central.clients_api``). Many such looks in a short time is how the insider cases
look in hindsight (a municipal-records inspection found staff browsing records of people they did not serve).
Once a minute this watch counts, per person, the distinct clients whose records were opened *with a reason*
in the last hour; past the threshold (``CAREALARM_INSIDER_THRESHOLD``), it writes one ``access.unusual`` audit
row naming the person (on the supervisors' audit page) and pages the supervisors on duty by e-mail and
webhook, once per person per hour. It never blocks the person: a busy night can be legitimate, and a
supervisor judges.

``unusual`` is the pure rule; :class:`InsiderWatch` reads the log and pages.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from care.channels import Channel, send_now
from care.roster import on_duty
from storage.db import SessionFactory
from storage.models import User
from storage.records_models import AuditEntry

from . import audit

__all__ = ["UNUSUAL", "WINDOW_MS", "InsiderWatch", "unusual"]

log = logging.getLogger(__name__)

UNUSUAL = "access.unusual"
WINDOW_MS = 3_600_000  # the hour looked back over, and the least time between two pages about one person


def unusual(looks: Iterable[tuple[int, int]], threshold: int) -> dict[int, int]:
    """From (user id, client id) looks with a reason: the users who looked at more than ``threshold``
    distinct clients, and how many."""
    clients: dict[int, set[int]] = {}
    for user_id, client_id in looks:
        clients.setdefault(user_id, set()).add(client_id)
    return {user: len(seen) for user, seen in clients.items() if threshold > 0 and len(seen) > threshold}


class InsiderWatch:
    """Check the audit log every ``interval_s``; flag and page what ``unusual`` finds."""

    def __init__(
        self,
        sessions: SessionFactory,
        channels: dict[str, Channel],
        *,
        threshold: int,
        interval_s: float = 60.0,
        clock_ms: Callable[[], int],
    ) -> None:
        self._sessions = sessions
        self._channels = channels
        self.threshold = threshold
        self._interval_s = interval_s
        self._clock_ms = clock_ms

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await asyncio.to_thread(self.check)
            except SQLAlchemyError as exc:  # the watchdog reports the database; try again next round
                log.warning("insider watch: audit log not readable (%s)", exc.__class__.__name__)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self._interval_s)

    def check(self) -> list[int]:
        """One round: the users flagged now (each at most once per hour)."""
        now = self._clock_ms()
        since = now - WINDOW_MS
        with self._sessions.begin() as session:
            looks = session.execute(
                select(AuditEntry.user_id, AuditEntry.client_id).where(
                    AuditEntry.at_ms > since,
                    AuditEntry.reason.is_not(None),
                    AuditEntry.client_id.is_not(None),
                    AuditEntry.action.not_like("%.refused"),
                )
            ).all()
            found = unusual(((u, c) for u, c in looks if c is not None), self.threshold)
            flagged_lately = set(
                session.scalars(
                    select(AuditEntry.user_id).where(AuditEntry.action == UNUSUAL, AuditEntry.at_ms > since)
                )
            )
            pages = []
            for user_id, count in sorted(found.items()):
                if user_id in flagged_lately:
                    continue
                user = session.get(User, user_id)
                who = f"{user.display_name} ({user.username})" if user else f"user {user_id}"
                detail = f"{count} client records opened with a reason in an hour (over {self.threshold})"
                audit.record(session, user_id, UNUSUAL, now_ms=now, detail=detail)
                pages.append((who, detail))
            recipients = [u.email for u in on_duty(session, "supervisor", now) if u.email] if pages else []
        for who, detail in pages:
            log.warning("insider watch: %s — %s", who, detail)
            self._page(recipients, who, detail)
        return [user_id for user_id in sorted(found) if user_id not in flagged_lately]

    def _page(self, recipients: list[str], who: str, detail: str) -> None:
        subject = f"[carealarm] Unusual access to client records by {who}"
        body = (
            f"{who}: {detail}.\n"
            "Each was opened with a reason and is in the audit log. Open the audit page, filter on the\n"
            "person, and judge whether it was care: nothing has been blocked.\n"
        )
        send_now(self._channels, recipients, "supervisor", subject, body)
