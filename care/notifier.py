"""Delivery of ``notifications`` rows through the channels, with retries; pure rules first, I/O below.

A row moves ``pending -> sending -> sent``, or back to ``pending`` with a later ``next_try_ms`` after a
failure, or to ``failed`` after the last attempt; an acknowledgement moves ``pending -> cancelled`` (done
elsewhere). The whole table is ``care.lifecycles.NOTIFICATION``. Every move is a conditional UPDATE on the
states the table moves it from, so whoever gets there first wins: a cancellation between two sends, or a
second deliverer racing this one.

While a row is ``sending``, ``next_try_ms`` holds the end of the sender's lease (claim + 60 s): a row still
``sending`` after it was left by a crash, and ``recover_stuck`` makes it ``pending`` again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, cast

from sqlalchemy import CursorResult, Update, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from storage.db import SessionFactory
from storage.models import Notification

from .channels import Channel, ChannelError, NotificationMessage
from .lifecycles import NOTIFICATION, NotificationEvent, NotificationState

__all__ = [
    "MAX_ATTEMPTS",
    "SENDING_LEASE_MS",
    "Notifier",
    "deliver_due",
    "gives_up",
    "next_try_after",
    "recover_stuck",
]

log = logging.getLogger(__name__)

# Delay before the next try after 1, 2, ... failed tries: quick at first (a relay restarting, a blip),
# then spaced so that a long outage is ridden out for ~13 minutes before a person is told it failed.
RETRY_DELAYS_MS = (1_000, 5_000, 30_000, 120_000, 600_000)
# One first try plus one retry per delay above.
MAX_ATTEMPTS = len(RETRY_DELAYS_MS) + 1
# Longer than any send can take (SMTP times out after 10 s, the webhook after 5 s), so a row still
# ``sending`` this long after its claim was left by a deliverer that died.
SENDING_LEASE_MS = 60_000
_MAX_ERROR = 500  # the width of notifications.last_error


def next_try_after(attempts: int) -> int:
    """Return the delay in ms before the next try of a notification that has failed ``attempts`` times."""
    if not 1 <= attempts < MAX_ATTEMPTS:
        raise ValueError(f"no retry after {attempts} attempts (1..{MAX_ATTEMPTS - 1} have one)")
    return RETRY_DELAYS_MS[attempts - 1]


def gives_up(attempts: int) -> bool:
    """Return True when a notification that has failed ``attempts`` times is not to be tried again."""
    return attempts >= MAX_ATTEMPTS


def _rowcount(session: Session, statement: Update) -> int:
    """Execute a bulk UPDATE (no ORM objects synchronised) and return how many rows it changed."""
    result = session.execute(statement.execution_options(synchronize_session=False))
    return int(cast("CursorResult[Any]", result).rowcount)


def _move(event: NotificationEvent) -> Update:
    """An UPDATE that makes ``event``'s move, on the rows whose state allows it (add the row's ``where``)."""
    return (
        update(Notification)
        .where(NOTIFICATION.where(Notification.state, event))
        .values(state=NOTIFICATION.target(event))
    )


def recover_stuck(sessions: SessionFactory, now_ms: int) -> int:
    """Put ``sending`` rows whose lease ran out back to ``pending``; return how many.

    Such a row was claimed by a deliverer that crashed (or was killed) mid-send, and we cannot know whether
    the message went out before it died: it may now be sent twice. That is the right side to err on for a
    care alert: a duplicate e-mail costs a nurse a glance, a lost one can leave a person on the floor
    waiting. Receivers can deduplicate on the notification id; they cannot recover a message never sent.
    """
    with sessions.begin() as session:
        count = _rowcount(session, _move(NotificationEvent.RECOVER).where(Notification.next_try_ms <= now_ms))
    if count:
        log.warning("notifier: %d notification(s) left sending by a crash are pending again", count)
    return count


def deliver_due(
    sessions: SessionFactory, channels: Mapping[str, Channel], now_ms: int, limit: int = 50
) -> int:
    """Send the pending notifications due at ``now_ms``; return how many this call claimed (and tried).

    Each row is claimed with its own short transaction and sent outside any transaction, so a database
    lock is never held across the network. ``now_ms`` is the batch's time, also recorded as ``sent_ms``.
    """
    with sessions.begin() as session:
        due = list(
            session.scalars(
                select(Notification.id)
                .where(
                    NOTIFICATION.where(Notification.state, NotificationEvent.CLAIM),
                    Notification.next_try_ms <= now_ms,
                )
                .order_by(Notification.next_try_ms, Notification.id)
                .limit(limit)
            )
        )
    claimed = 0
    down: set[str] = set()  # channels that failed in this batch: the rest of their rows wait a round
    for notification_id in due:
        message = _claim(sessions, notification_id, channels, now_ms, down)
        if message is None:
            continue
        claimed += 1
        if message.channel not in channels:
            continue  # _claim marked it failed
        error = _send(channels[message.channel], message)
        if error is not None:
            down.add(message.channel)
        _finish(sessions, message, now_ms, error)
    return claimed


def _claim(
    sessions: SessionFactory,
    notification_id: int,
    channels: Mapping[str, Channel],
    now_ms: int,
    down: set[str],
) -> NotificationMessage | None:
    with sessions.begin() as session:
        row = session.get(Notification, notification_id)
        if row is None or row.channel in down:
            return None
        configured = row.channel in channels
        move = NotificationEvent.CLAIM if configured else NotificationEvent.REFUSE
        values: dict[str, object] = (
            {"next_try_ms": now_ms + SENDING_LEASE_MS}
            if configured
            else {"last_error": f"channel {row.channel} is not configured"[:_MAX_ERROR]}
        )
        # Conditional on the state we expect: an acknowledgement that cancelled the row since we listed
        # it, or another deliverer that claimed it first, wins, and the rowcount tells us so.
        claim = (
            _move(move)
            .where(Notification.id == notification_id, Notification.next_try_ms <= now_ms)
            .values(**values)
        )
        if _rowcount(session, claim) != 1:
            return None
        message = NotificationMessage(
            id=row.id,
            alert_id=row.alert_id,
            level=row.level,
            channel=row.channel,
            recipient=row.recipient,
            subject=row.subject,
            body=row.body,
        )
    if not configured:
        log.error("notifier: notification %d failed: channel %s is not configured", row.id, row.channel)
    return message


def _send(channel: Channel, message: NotificationMessage) -> str | None:
    """Send; return None on success, else the error to record."""
    try:
        channel.send(message)
    except ChannelError as exc:
        log.warning("notifier: notification %d via %s failed: %s", message.id, message.channel, exc)
        return str(exc)
    except Exception as exc:
        # A bug in a channel must not leave the row ``sending`` (or stop the other notifications): record it.
        log.exception("notifier: notification %d via %s raised", message.id, message.channel)
        return f"{exc.__class__.__name__}: {exc}"
    return None


def _finish(sessions: SessionFactory, message: NotificationMessage, now_ms: int, error: str | None) -> None:
    with sessions.begin() as session:
        attempts = (
            session.scalars(select(Notification.attempts).where(Notification.id == message.id)).one() + 1
        )
        # DELIVER moves from 'pending' too: had recover_stuck taken the row back meanwhile, this stops a
        # second send.
        if error is None:
            move = NotificationEvent.DELIVER
            values: dict[str, object] = {"sent_ms": now_ms, "attempts": attempts}
        elif gives_up(attempts):
            move = NotificationEvent.GIVE_UP
            values = {"attempts": attempts, "last_error": error[:_MAX_ERROR]}
        else:
            move = NotificationEvent.RETRY
            values = {
                "attempts": attempts,
                "last_error": error[:_MAX_ERROR],
                "next_try_ms": now_ms + next_try_after(attempts),
            }
        _rowcount(session, _move(move).where(Notification.id == message.id).values(**values))
    if error is None:
        log.info("notifier: notification %d sent via %s", message.id, message.channel)
    elif NOTIFICATION.target(move) is NotificationState.FAILED:
        log.error(
            "notifier: notification %d via %s failed for good after %d attempts: %s",
            message.id,
            message.channel,
            attempts,
            error,
        )


class Notifier:
    """Deliver due notifications until stopped: every ``interval_s``, or at once after ``wake()``."""

    def __init__(
        self,
        *,
        sessions: SessionFactory,
        channels: Mapping[str, Channel],
        interval_s: float = 1.0,
        limit: int = 50,
        clock_ms: Callable[[], int] = lambda: int(time.time() * 1000),
    ) -> None:
        self._sessions = sessions
        self._channels = channels
        self._interval_s = interval_s
        self._limit = limit
        self._clock_ms = clock_ms
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    def wake(self) -> None:
        """Thread-safe: there are new notifications (called after the escalation wrote some)."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    def run_once(self) -> int:
        """Recover crashed sends, then deliver one batch; return how many notifications were tried."""
        recover_stuck(self._sessions, self._clock_ms())
        return deliver_due(self._sessions, self._channels, self._clock_ms(), self._limit)

    async def run(self, stop: asyncio.Event) -> None:
        self._loop = asyncio.get_running_loop()
        delay = 0.2
        while not stop.is_set():
            self._wake.clear()
            try:
                tried = await asyncio.to_thread(self.run_once)
                delay = 0.2
            except Exception as exc:
                # The database is away (or something we did not foresee): notifications are too important
                # to stop sending for good, so back off and try again, like the monitor does.
                if isinstance(exc, SQLAlchemyError):
                    # The class name only: the message would carry SQL parameters (who is ill and why).
                    log.error(
                        "notifier: database unavailable (%s); retrying in %.1fs",
                        exc.__class__.__name__,
                        delay,
                    )
                else:
                    log.exception("notifier: delivery round failed; retrying in %.1fs", delay)
                await _wait(stop, self._wake, delay, wake_too=False)
                delay = min(delay * 2, 5.0)
                continue
            if tried >= self._limit:
                continue  # a full batch: there may be more due already
            await _wait(stop, self._wake, self._interval_s, wake_too=True)


async def _wait(stop: asyncio.Event, wake: asyncio.Event, timeout: float, *, wake_too: bool) -> None:
    """Wait for ``timeout`` seconds, or less if stopped (or woken, when ``wake_too``)."""
    waiters = {asyncio.ensure_future(stop.wait())}
    if wake_too:
        waiters.add(asyncio.ensure_future(wake.wait()))
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
