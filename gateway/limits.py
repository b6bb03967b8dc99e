"""Pure guards against hostile or broken devices: a per-device rate limit and a clock-sanity check."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

__all__ = ["MAX_FUTURE_MS", "MAX_PAST_MS", "ClockVerdict", "RateLimiter", "judge_clock"]

# A device clock more than a day ahead is broken; an event older than a week is not news any more (a
# dispenser that was offline buffers its dose events, and a week covers a holiday without network).
MAX_FUTURE_MS: Final = 24 * 3600 * 1000
MAX_PAST_MS: Final = 7 * 24 * 3600 * 1000


@dataclass(frozen=True, slots=True)
class ClockVerdict:
    ok: bool
    skew_ms: int


def judge_clock(device_ts_ms: int, now_ms: int) -> ClockVerdict:
    """Say whether a device timestamp is plausible at ``now_ms``."""
    skew = device_ts_ms - now_ms
    return ClockVerdict(-MAX_PAST_MS <= skew <= MAX_FUTURE_MS, skew)


class RateLimiter:
    """A token bucket per device: ``rate`` messages per second sustained, ``burst`` at once.

    Real devices send a heartbeat every 30-300 s and a handful of events a day; a device above the limit
    is broken or hostile, and its excess must not slow anyone else down. Time is passed in (seconds).
    """

    def __init__(self, rate: float = 5.0, burst: float = 50.0, max_devices: int = 200_000) -> None:
        self._rate = rate
        self._burst = burst
        self._max_devices = max_devices
        self._buckets: dict[str, tuple[float, float]] = {}  # device -> (tokens, last refill time)

    def allow(self, device: str, now: float) -> bool:
        tokens, last = self._buckets.get(device, (self._burst, now))
        tokens = min(self._burst, tokens + (now - last) * self._rate)
        allowed = tokens >= 1.0
        if allowed:
            tokens -= 1.0
        if len(self._buckets) >= self._max_devices and device not in self._buckets:
            self._buckets.clear()  # bounded memory under a flood of made-up device ids
        self._buckets[device] = (tokens, now)
        return allowed
