"""Counters and a latency summary, rendered in the Prometheus text format."""

from __future__ import annotations

import threading
from collections import Counter

__all__ = ["Metrics"]

# Store latency buckets in seconds: an alarm should be stored within tens of milliseconds.
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    """Thread-safe counters of what the gateway received, stored and refused."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.received: Counter[str] = Counter()
        self.rejected: Counter[str] = Counter()
        self.stored = 0
        self.duplicates = 0
        self.store_errors = 0
        self.devices_online = 0  # a gauge, set by the gateway at each liveness flush
        self._latency_buckets = [0] * len(_BUCKETS)
        self._latency_sum = 0.0
        self._latency_count = 0

    def count_received(self, kind: str) -> None:
        with self._lock:
            self.received[kind] += 1

    def count_rejected(self, reason: str) -> None:
        with self._lock:
            self.rejected[reason] += 1

    def count_stored(self, stored: int, duplicates: int) -> None:
        with self._lock:
            self.stored += stored
            self.duplicates += duplicates

    def count_store_error(self) -> None:
        with self._lock:
            self.store_errors += 1

    def observe_store_latency(self, seconds: float) -> None:
        with self._lock:
            self._latency_sum += seconds
            self._latency_count += 1
            for i, bound in enumerate(_BUCKETS):
                if seconds <= bound:
                    self._latency_buckets[i] += 1

    def render(self) -> str:
        """Return the metrics in the Prometheus text exposition format."""
        with self._lock:
            out = [
                "# HELP carealarm_gateway_messages_received_total Device messages received, by kind.",
                "# TYPE carealarm_gateway_messages_received_total counter",
            ]
            out += [
                f'carealarm_gateway_messages_received_total{{kind="{k}"}} {v}'
                for k, v in sorted(self.received.items())
            ]
            out += [
                "# HELP carealarm_gateway_messages_rejected_total Device messages refused, by reason.",
                "# TYPE carealarm_gateway_messages_rejected_total counter",
            ]
            out += [
                f'carealarm_gateway_messages_rejected_total{{reason="{k}"}} {v}'
                for k, v in sorted(self.rejected.items())
            ]
            out += [
                "# TYPE carealarm_gateway_events_stored_total counter",
                f"carealarm_gateway_events_stored_total {self.stored}",
                "# TYPE carealarm_gateway_events_duplicate_total counter",
                f"carealarm_gateway_events_duplicate_total {self.duplicates}",
                "# TYPE carealarm_gateway_store_errors_total counter",
                f"carealarm_gateway_store_errors_total {self.store_errors}",
                "# HELP carealarm_gateway_devices_online Devices whose last report said online.",
                "# TYPE carealarm_gateway_devices_online gauge",
                f"carealarm_gateway_devices_online {self.devices_online}",
                "# HELP carealarm_gateway_store_seconds Time from receipt to commit of a batch.",
                "# TYPE carealarm_gateway_store_seconds histogram",
            ]
            out += [
                f'carealarm_gateway_store_seconds_bucket{{le="{b}"}} {n}'
                for b, n in zip(_BUCKETS, self._latency_buckets, strict=True)
            ]
            out += [
                f'carealarm_gateway_store_seconds_bucket{{le="+Inf"}} {self._latency_count}',
                f"carealarm_gateway_store_seconds_sum {self._latency_sum:.6f}",
                f"carealarm_gateway_store_seconds_count {self._latency_count}",
            ]
        return "\n".join(out) + "\n"
