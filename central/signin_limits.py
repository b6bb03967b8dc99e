"""Sign-in failure limits: per user name, per source address and per (address, name), with a growing delay.

The choice (docs/operations.md, "Sign-in limits"):

- every key gets ``free`` failures, then each further failure doubles the wait before the next try
  (1 s, 2 s, 4 s, ...) up to the key's cap; a key's failures are forgotten ``forget_s`` after its last one;
- **per address** (spraying one password over many names from one place): 20 free failures — a care
  station's nurses often share one address — capped at 15 minutes;
- **per name** (guessing one nurse's password from many places): 5 free failures, capped at 5 minutes,
  counting only failures from addresses this user has *not* signed in from before. An attacker elsewhere
  therefore never locks the real owner out at her usual workstation, and from a new place at most 5 minutes;
- **per (address, name)**: 5 free failures capped at 1 minute, the only limit on a workstation the user has
  signed in from (so a colleague on the station's shared address still cannot guess quickly).

Memory is bounded: each table is an LRU of at most ``max_entries`` keys (the oldest is dropped first).
Pure: every method takes the clock from the injected ``clock``; nothing here reads the database.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Backoff", "FailureLimiter"]


@dataclass(frozen=True, slots=True)
class Backoff:
    """``free`` failures, then a wait of 1 s doubled by each further failure, at most ``cap_s``."""

    free: int
    cap_s: float

    def wait_s(self, failures: int) -> float:
        if failures < self.free:
            return 0.0
        return float(min(self.cap_s, 2.0 ** min(failures - self.free, 30)))


_ADDRESS = Backoff(free=20, cap_s=900.0)
_NAME = Backoff(free=5, cap_s=300.0)
_PAIR = Backoff(free=5, cap_s=60.0)
# How long an address stays "known" for a user after a successful sign-in: about a month of shifts.
_KNOWN_S = 30 * 86_400.0


@dataclass(slots=True)
class _Failures:
    count: int
    last: float


class _Lru:
    """A bounded map of key -> failures; the least recently touched key is dropped first."""

    def __init__(self, max_entries: int) -> None:
        self._max = max_entries
        self._items: OrderedDict[str, _Failures] = OrderedDict()

    def get(self, key: str, now: float, forget_s: float) -> int:
        item = self._items.get(key)
        if item is None:
            return 0
        if now - item.last > forget_s:
            del self._items[key]
            return 0
        return item.count

    def last(self, key: str) -> float:
        item = self._items.get(key)
        return item.last if item else 0.0

    def add(self, key: str, now: float, forget_s: float) -> None:
        count = self.get(key, now, forget_s) + 1
        self._items[key] = _Failures(count, now)
        self._items.move_to_end(key)
        while len(self._items) > self._max:
            self._items.popitem(last=False)

    def pop(self, key: str) -> None:
        self._items.pop(key, None)

    def __len__(self) -> int:
        return len(self._items)


class FailureLimiter:
    """Refuse sign-in tries with a growing delay per address, per name and per (address, name); in memory."""

    def __init__(
        self,
        *,
        max_entries: int = 10_000,
        forget_s: float = 900.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._forget_s = forget_s
        self._clock = clock
        self._addresses = _Lru(max_entries)
        self._names = _Lru(max_entries)
        self._pairs = _Lru(max_entries)
        self._known: OrderedDict[str, float] = OrderedDict()  # "address|name" -> last success
        self._max = max_entries
        self._lock = threading.Lock()

    def wait_s(self, username: str, address: str) -> float:
        """Seconds until this address may try this name again (0: now)."""
        with self._lock:
            now = self._clock()
            pair = _pair(address, username)
            waits = [self._wait(self._pairs, pair, _PAIR, now)]
            if not self._is_known(pair, now):
                waits.append(self._wait(self._names, username, _NAME, now))
                waits.append(self._wait(self._addresses, address, _ADDRESS, now))
            return max(waits)

    def fail(self, username: str, address: str) -> None:
        with self._lock:
            now = self._clock()
            pair = _pair(address, username)
            self._pairs.add(pair, now, self._forget_s)
            if not self._is_known(pair, now):
                self._names.add(username, now, self._forget_s)
                self._addresses.add(address, now, self._forget_s)

    def succeed(self, username: str, address: str) -> None:
        """A right password: this address is known for this user; its own failures for the name are reset.

        The address's count over all names is not reset: one valid account must not unlock spraying.
        """
        with self._lock:
            pair = _pair(address, username)
            self._pairs.pop(pair)
            self._known[pair] = self._clock()
            self._known.move_to_end(pair)
            while len(self._known) > self._max:
                self._known.popitem(last=False)

    def size(self) -> int:
        """How many keys are held (bounded by four times ``max_entries``)."""
        with self._lock:
            return len(self._addresses) + len(self._names) + len(self._pairs) + len(self._known)

    def _wait(self, table: _Lru, key: str, backoff: Backoff, now: float) -> float:
        wait = backoff.wait_s(table.get(key, now, self._forget_s))
        return max(0.0, table.last(key) + wait - now) if wait else 0.0

    def _is_known(self, pair: str, now: float) -> bool:
        since = self._known.get(pair)
        return since is not None and now - since <= _KNOWN_S


def _pair(address: str, username: str) -> str:
    return f"{address}|{username}"
