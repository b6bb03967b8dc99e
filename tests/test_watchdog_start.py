"""The first probe after a start waits for the console feed: a probe sent before the feed has read its
starting position could be changed before it, never shown, and judged lost — "ALARM CHAIN BROKEN" and a
page to the supervisor after every restart (seen on `make demo`). On SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from typing import Any

from central.feed import Broadcaster, ChangeCursor
from central.watchdog import ProbeSender, Watchdog
from storage.db import SessionFactory

NOW = 1_800_000_000_000


class _Sender(ProbeSender):
    def __init__(self) -> None:  # no broker: records what would be published
        self.sent: list[str] = []

    def send(self, msg_id: str, now_ms: int) -> None:
        self.sent.append(msg_id)

    def close(self) -> None:
        pass


def _watchdog(sessions: SessionFactory, feed: Broadcaster, sender: _Sender) -> Watchdog:
    published: list[dict[str, Any]] = []
    return Watchdog(
        sessions=sessions,
        publish=published.append,
        clock_ms=lambda: NOW,
        probe=sender,
        feed_ready=lambda: feed.cursor is not None,
    )


def test_no_probe_before_the_feed_has_its_starting_position(sessions: SessionFactory) -> None:
    feed = Broadcaster(sessions, poll_interval_s=0.1)
    sender = _Sender()
    watchdog = _watchdog(sessions, feed, sender)
    asyncio.run(watchdog.check_once())
    assert sender.sent == []  # the feed has not started reading
    feed.cursor = ChangeCursor(0)
    asyncio.run(watchdog.check_once())
    assert len(sender.sent) == 1
