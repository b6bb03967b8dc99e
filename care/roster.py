"""Who is on duty, and paging them: notifications written in the escalation step's own transaction."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from storage.models import Alert, Client, DutyShift, Notification, User

from .lifecycles import NotificationState

__all__ = ["on_duty", "page"]

log = logging.getLogger(__name__)


def on_duty(session: Session, role: str, at_ms: int, district: str = "") -> list[User]:
    """The users on duty in ``role`` at ``at_ms`` (district nurses of the client's district first).

    With nobody on the roster for that role, everyone with the role is paged: a page to too many people
    is a nuisance, a page to nobody is an alarm lost.
    """
    query = (
        select(User)
        .join(DutyShift, DutyShift.user_id == User.id)
        .where(DutyShift.role == role, DutyShift.starts_ms <= at_ms, DutyShift.ends_ms > at_ms)
    )
    users = list(session.scalars(query))
    if role == "district_nurse" and district:
        local = [u for u in users if u.district == district]
        users = local or users
    if users:
        return users
    log.warning("roster: nobody on duty as %s; paging everyone with that role", role)
    everyone = list(session.scalars(select(User).where(User.role == role)))
    if role == "district_nurse" and district:
        everyone = [u for u in everyone if u.district == district] or everyone
    return everyone


def page(
    session: Session, alert: Alert, roles: Iterable[str], level: int, now_ms: int, channels: frozenset[str]
) -> int:
    """Write the notifications of one escalation level; return how many were written."""
    client = session.get(Client, alert.client_id)
    district = client.district if client else ""
    name = client.name if client else f"client {alert.client_id}"
    subject = f"[carealarm] {'ESCALATED ' if level else ''}{alert.detail} — {name}"
    body = (
        f"{alert.detail} for {name} ({client.address if client else ''}).\n"
        f"Alert {alert.id}, priority {alert.priority}, escalation level {level}, "
        f"open for {(now_ms - alert.opened_ms) // 1000} s and not yet acknowledged.\n"
        "Open the care-station console to take it."
    )
    written = 0
    recipients: dict[int, User] = {}
    roles = tuple(roles)
    for role in roles:
        for user in on_duty(session, role, now_ms, district):
            recipients.setdefault(user.id, user)
    if "email" in channels:
        for user in recipients.values():
            if user.email:
                session.add(_note(alert, level, "email", user.email, user.id, subject, body, now_ms))
                written += 1
    if "webhook" in channels:
        session.add(_note(alert, level, "webhook", ",".join(roles), None, subject, body, now_ms))
        written += 1
    return written


def _note(
    alert: Alert,
    level: int,
    channel: str,
    recipient: str,
    user_id: int | None,
    subject: str,
    body: str,
    now_ms: int,
) -> Notification:
    return Notification(
        alert_id=alert.id,
        level=level,
        channel=channel,
        recipient=recipient,
        user_id=user_id,
        subject=subject,
        body=body,
        state=NotificationState.PENDING,
        attempts=0,
        created_ms=now_ms,
        next_try_ms=now_ms,
    )
