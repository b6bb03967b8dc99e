"""The live feed: follow ``alert_changes`` and push each changed alert to every connected console.

``ChangeCursor`` is the pure part. On PostgreSQL, sequence numbers are handed out when a row is inserted
but become visible when its transaction commits, so seq 7 may appear after seq 8; and a rolled-back
transaction leaves a hole for ever. The cursor therefore re-reads from its low-water mark, delivers each
seq once, and gives up on a hole only after ``gap_timeout_ms``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import func, select

from storage.db import SessionFactory
from storage.models import AlertChange

from .views import alert_views, probe_alert_ids

__all__ = ["Broadcaster", "ChangeCursor"]

log = logging.getLogger(__name__)


class ChangeCursor:
    """Deliver every sequence number once, in the face of out-of-order commits."""

    def __init__(self, start: int, gap_timeout_ms: int = 10_000) -> None:
        self.low = start  # every seq <= low is delivered or given up
        self._gap_timeout_ms = gap_timeout_ms
        self._delivered: set[int] = set()
        self._gaps: dict[int, int] = {}  # seq -> when it was first seen missing

    def accept(self, seqs: list[int], now_ms: int) -> list[int]:
        """Take the seqs read from ``low`` upward; return those not delivered before, in order."""
        new = sorted(s for s in set(seqs) if s > self.low and s not in self._delivered)
        self._delivered.update(new)
        top = max(self._delivered, default=self.low)
        for s in range(self.low + 1, top):
            if s not in self._delivered:
                self._gaps.setdefault(s, now_ms)
        while True:
            nxt = self.low + 1
            if nxt in self._delivered:
                self._delivered.discard(nxt)
            elif nxt in self._gaps and now_ms - self._gaps[nxt] >= self._gap_timeout_ms:
                log.debug("feed: seq %d never committed; moving on", nxt)
            else:
                break
            self._gaps.pop(nxt, None)
            self.low = nxt
        return new


class Broadcaster:
    """Poll the change feed (woken at once by hints) and fan changes out to subscriber queues."""

    def __init__(
        self,
        sessions: SessionFactory,
        poll_interval_s: float = 1.0,
        clock_ms: Callable[[], int] | None = None,
        on_probe: Callable[[], None] | None = None,
    ) -> None:
        self._sessions = sessions
        self._poll_interval_s = poll_interval_s
        self._clock_ms = clock_ms or (lambda: int(time.time() * 1000))
        self._subscribers: set[asyncio.Queue[dict[str, Any]]] = set()
        self.on_probe = on_probe  # the watchdog: the end-to-end probe's alert came through the feed
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.cursor: ChangeCursor | None = None
        self.read_ms: int | None = None  # the last successful read of the change feed (its own health)

    def subscribe(self) -> asyncio.Queue[dict[str, Any]]:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=10_000)
        self._subscribers.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[dict[str, Any]]) -> None:
        self._subscribers.discard(queue)

    def wake(self) -> None:
        """Thread-safe: the feed has new rows."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    def _start_position(self) -> int:
        with self._sessions() as session:
            return int(session.scalar(select(func.coalesce(func.max(AlertChange.seq), 0))) or 0)

    def _read(self, low: int) -> tuple[list[int], list[dict[str, Any]], bool]:
        with self._sessions() as session:
            rows = session.execute(
                select(AlertChange.seq, AlertChange.alert_id)
                .where(AlertChange.seq > low)
                .order_by(AlertChange.seq)
                .limit(2000)
            ).all()
            assert self.cursor is not None
            new = set(self.cursor.accept([seq for seq, _ in rows], self._clock_ms()))
            alert_ids = sorted({alert_id for seq, alert_id in rows if seq in new})
            probe = (
                bool(alert_ids) and self.on_probe is not None and bool(probe_alert_ids(session, alert_ids))
            )
            return sorted(new), alert_views(session, alert_ids) if alert_ids else [], probe

    async def run(self, stop: asyncio.Event) -> None:
        self._loop = asyncio.get_running_loop()
        while self.cursor is None and not stop.is_set():
            try:
                self.cursor = ChangeCursor(await asyncio.to_thread(self._start_position))
            except Exception as exc:  # the database may still be starting
                log.error("feed: cannot read the change feed yet (%s)", exc.__class__.__name__)
                await asyncio.sleep(1.0)
        while not stop.is_set():
            self._wake.clear()
            try:
                assert self.cursor is not None
                new, views, probe = await asyncio.to_thread(self._read, self.cursor.low)
                self.read_ms = self._clock_ms()
            except Exception as exc:
                log.error("feed: read failed (%s); retrying", exc.__class__.__name__)
                await asyncio.sleep(1.0)
                continue
            for view in views:
                self._publish({"type": "alert", "alert": view})
            if probe and self.on_probe is not None:
                self.on_probe()
            if new and len(new) >= 2000:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self._poll_interval_s)

    def health_state(self) -> dict[str, object]:
        """What the feed says of itself at central's beat: its last read and how far it has delivered."""
        return {"feed_read_ms": self.read_ms, "feed_seq": self.cursor.low if self.cursor else None}

    def publish(self, message: dict[str, Any]) -> None:
        """Send a message to every console (the watchdog's health changes)."""
        self._publish(message)

    def _publish(self, message: dict[str, Any]) -> None:
        for queue in list(self._subscribers):
            try:
                queue.put_nowait(message)
            except asyncio.QueueFull:
                # A console that cannot keep up skips the backlog and takes a fresh snapshot instead.
                while not queue.empty():
                    queue.get_nowait()
                queue.put_nowait({"type": "resync"})
                log.warning("feed: a console fell behind; it resynchronises from a snapshot")
