"""The monitor process: wakes on a hint or a poll, turns new device events into alerts, hints consoles."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from storage.db import SessionFactory

from .store import handle_pending_events

__all__ = ["Monitor"]

log = logging.getLogger(__name__)


class Monitor:
    """Handle pending device events until stopped."""

    def __init__(
        self,
        *,
        sessions: SessionFactory,
        notify_alerts: Callable[[], None],
        poll_interval_s: float = 1.0,
        clock_ms: Callable[[], int] = lambda: int(time.time() * 1000),
    ) -> None:
        self._sessions = sessions
        self._notify_alerts = notify_alerts
        self._poll_interval_s = poll_interval_s
        self._clock_ms = clock_ms
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    def wake(self) -> None:
        """Thread-safe: there are new events (called from the hint listener's thread)."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    def run_once(self) -> int:
        """Handle one batch of pending events; return how many were handled."""
        with self._sessions.begin() as session:
            return handle_pending_events(session, self._clock_ms())

    async def run(self, stop: asyncio.Event) -> None:
        self._loop = asyncio.get_running_loop()
        delay = 0.2
        while not stop.is_set():
            self._wake.clear()
            try:
                handled = await asyncio.to_thread(self.run_once)
                delay = 0.2
            except IntegrityError:
                # Another monitor opened the same client's alert at the same moment: take it again.
                log.info("monitor: concurrent alert for the same client; retrying the batch")
                continue
            except SQLAlchemyError as exc:
                log.error(
                    "monitor: database unavailable (%s); retrying in %.1fs", exc.__class__.__name__, delay
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            if handled:
                self._notify_alerts()
                continue  # there may be more
            waiter = asyncio.ensure_future(self._wake.wait())
            stopper = asyncio.ensure_future(stop.wait())
            await asyncio.wait(
                {waiter, stopper}, timeout=self._poll_interval_s, return_when=asyncio.FIRST_COMPLETED
            )
            waiter.cancel()
            stopper.cancel()
