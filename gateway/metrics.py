"""Counters and a latency histogram of the gateway, rendered by prometheus_client."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

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
        """Return the metrics in the Prometheus text exposition format (prometheus_client renders them)."""
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Collector(self))
        return generate_latest(registry).decode()


class _Collector(Collector):
    """The gateway's counters as Prometheus metric families, read under the lock at each scrape."""

    def __init__(self, metrics: Metrics) -> None:
        self._m = metrics

    def collect(self) -> Iterator[Metric]:
        m = self._m
        with m._lock:
            received = CounterMetricFamily(
                "carealarm_gateway_messages_received", "Device messages received, by kind.", labels=["kind"]
            )
            for kind, n in sorted(m.received.items()):
                received.add_metric([kind], n)
            rejected = CounterMetricFamily(
                "carealarm_gateway_messages_rejected",
                "Device messages refused, by reason.",
                labels=["reason"],
            )
            for reason, n in sorted(m.rejected.items()):
                rejected.add_metric([reason], n)
            yield received
            yield rejected
            yield CounterMetricFamily(
                "carealarm_gateway_events_stored", "Device events stored.", value=m.stored
            )
            yield CounterMetricFamily(
                "carealarm_gateway_events_duplicate",
                "Resent device events already stored.",
                value=m.duplicates,
            )
            yield CounterMetricFamily(
                "carealarm_gateway_store_errors", "Database writes that failed.", value=m.store_errors
            )
            yield GaugeMetricFamily(
                "carealarm_gateway_devices_online",
                "Devices whose last report said online.",
                value=m.devices_online,
            )
            cumulative = [(str(b), n) for b, n in zip(_BUCKETS, m._latency_buckets, strict=True)]
            yield HistogramMetricFamily(
                "carealarm_gateway_store_seconds",
                "Time from receipt to commit of a batch.",
                buckets=[*cumulative, ("+Inf", m._latency_count)],
                sum_value=m._latency_sum,
            )
