"""The gateway process: two broker links feed a priority queue; one writer thread stores, then acks.

Order of work for every event (the rule that matters most)::

    broker --QoS1--> link --queue--> writer: decode, INSERT .. ON CONFLICT DO NOTHING, COMMIT
                                             then PUBACK (manual ack) and the application ack

If the process dies before the commit, the broker still holds the message (no PUBACK was sent) and
redelivers it to the persistent session; if it dies after the commit but before the acks, the redelivered
copy hits the unique key, is not stored again, and is acknowledged. A *different* message that hits the
key is no copy: it is refused with ``msg_id_reused``, or, an alarm, stored under a derived msg_id
(gateway.ingest.judge_reuse).

Alarms first: Mosquitto delivers a session's messages in order, so alarms (and faults) have a session of
their own — a heartbeat backlog on the bulk link can never hold an alarm back — and the writer's queue is
ordered by priority as well.

Retained messages: only ``status`` may be retained. Any other retained message the broker replays at a
subscribe is refused with ``retained`` and, once its dead letter is committed, cleared at the broker (an
empty retained message on its topic, sent on the link it came on), so the next restart does not replay it.
The gateway hears its own clearing as an empty message, which it takes and ignores.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import cast

import paho.mqtt.client as paho
from sqlalchemy.exc import SQLAlchemyError

from messaging.mqtt import HINT_EVENTS, MqttConfig
from protocol.v1 import DEVICE_KINDS, Ack, Heartbeat, ProtocolError, Status, ack_topic, decode, encode_ack
from storage.db import SessionFactory

from .ingest import DEAD_LETTERS_PER_HOUR, Inbound, Plan, Reuse, plan_batch, priority_of
from .limits import RateLimiter
from .link import BrokerLink
from .metrics import Metrics
from .store import LivenessUpdate, Stored, known_device_ids, store_batch, store_liveness

__all__ = ["PRIORITY_KINDS", "Gateway"]

log = logging.getLogger(__name__)

PRIORITY_KINDS = ("alarm", "fault")
BULK_KINDS = tuple(k for k in DEVICE_KINDS if k not in PRIORITY_KINDS)
# Up to this many messages share one transaction: one commit (one fsync) for many messages is what makes
# durable ingest fast; alarms still go first because the queue is ordered by priority.
_MAX_BATCH = 500
# Liveness (last seen, battery) is written in batches, not once per heartbeat.
_LIVENESS_FLUSH_S = 5.0
# Devices per liveness transaction (see _flush_liveness).
_LIVENESS_CHUNK = 500
# A device that is not registered is looked up again after this long (it may have been provisioned).
_UNKNOWN_RECHECK_S = 30.0
_REFUSED_PRIORITY = 9


class _Link(BrokerLink):
    """A broker link that can also clear a retained message (``BrokerLink.publish`` never retains)."""

    def clear_retained(self, topic: str) -> None:
        # An empty retained message makes the broker forget what it kept on the topic (MQTT 5 §3.3.1.3).
        self._client.publish(topic, b"", qos=1, retain=True)


class Gateway:
    """MQTT ingestion with durable-before-ack semantics."""

    def __init__(
        self,
        *,
        mqtt: MqttConfig,
        sessions: SessionFactory,
        name: str = "gw1",
        share_group: str | None = None,
        metrics: Metrics | None = None,
        liveness_flush_s: float = _LIVENESS_FLUSH_S,
        rate_limiter: RateLimiter | None = None,
        clock_ms: Callable[[], int] = lambda: int(time.time() * 1000),
        dead_letter_cap: int = DEAD_LETTERS_PER_HOUR,
    ) -> None:
        self._sessions = sessions
        self._dead_letter_cap = dead_letter_cap
        # Refusals beyond a device's dead-letter cap (counted on a summary row, not stored one by one), and
        # retained messages cleared at the broker. Plain counters, read by the tests and for /metrics.
        self.dead_letters_counted_only = 0
        self.retained_cleared = 0
        self._name = name
        self.metrics = metrics or Metrics()
        self._clock_ms = clock_ms
        self._liveness_flush_s = liveness_flush_s
        self._limiter = rate_limiter or RateLimiter()
        # Alarms have a bucket of their own: a device that resends a backlog of reports after a network
        # outage must never have its alarm refused (or wait) because of them.
        self._alarm_limiter = RateLimiter(rate=1.0, burst=100.0) if rate_limiter is None else rate_limiter
        self._limiter_lock = threading.Lock()
        self._liveness_lock = threading.Lock()  # paho's bulk thread and the writer both track liveness
        self._queue: queue.PriorityQueue[tuple[int, int, Inbound]] = queue.PriorityQueue()
        self._seq = itertools.count()
        self._stop = threading.Event()
        self._known: set[str] = set()
        self._unknown_checked: dict[str, float] = {}
        self._liveness: dict[str, LivenessUpdate] = {}
        self._liveness_urgent = False
        self._online: dict[str, bool] = {}  # what this gateway heard last, for the metrics gauge
        self._last_flush = time.monotonic()
        self._writer: threading.Thread | None = None
        self._flusher: threading.Thread | None = None
        prefix = f"$share/{share_group}/" if share_group else ""
        self._links = [
            _Link(
                mqtt,
                f"carealarm-gateway-{name}-{role}",
                [f"{prefix}carealarm/v1/devices/+/{kind}" for kind in kinds],
                self._on_message,
            )
            for role, kinds in (("alarms", PRIORITY_KINDS), ("bulk", BULK_KINDS))
        ]

    @property
    def connected(self) -> bool:
        return all(link.connected.is_set() for link in self._links)

    def health_state(self) -> dict[str, object]:
        """What the gateway says of itself at each beat (``central.health`` judges it)."""
        refused = [link.refused for link in self._links if link.refused]
        return {
            "connected": self.connected,
            "subscribed": all(link.subscribed.is_set() for link in self._links),
            "refused": refused[0] if refused else None,
            "store_errors": self.metrics.store_errors,
        }

    def wait_connected(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        return all(link.connected.wait(max(0.0, deadline - time.monotonic())) for link in self._links)

    # -- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> None:
        self._load_registry_until_ready()
        self._writer = threading.Thread(
            target=self._write_loop, name=f"gateway-{self._name}-writer", daemon=True
        )
        self._writer.start()
        # Liveness has a thread of its own: writing 10,000 devices' last-seen must never make an alarm wait.
        self._flusher = threading.Thread(
            target=self._flush_loop, name=f"gateway-{self._name}-liveness", daemon=True
        )
        self._flusher.start()
        for link in self._links:
            link.start()

    def stop(self) -> None:
        self._stop.set()
        for link in self._links:
            link.stop()
        if self._writer is not None:
            self._writer.join(timeout=10)
        if self._flusher is not None:
            self._flusher.join(timeout=10)

    # -- paho threads ------------------------------------------------------------------------------
    def _on_message(self, link: BrokerLink, msg: paho.MQTTMessage) -> None:
        refused = None
        parts = msg.topic.split("/")
        if len(parts) == 5:
            limiter = self._alarm_limiter if parts[4] in PRIORITY_KINDS else self._limiter
            with self._limiter_lock:
                if not limiter.allow(parts[3], time.monotonic()):
                    refused = "rate_limited"
            # A valid heartbeat is state, not an event: handled here on the broker link's own thread, so
            # thousands of them a second never queue in front of the writer (and its alarms).
            if (
                refused is None
                and parts[4] == "heartbeat"
                and not msg.retain
                and self._heartbeat_now(link, msg)
            ):
                return
        inbound = Inbound(
            msg.topic,
            bytes(msg.payload),
            msg.mid,
            msg.qos,
            self._clock_ms(),
            bool(msg.retain),
            self._links.index(cast(_Link, link)),  # every link of ours is a _Link
            refused,
        )
        # A flooding device's excess goes to the back of the queue, behind every other device's messages.
        priority = _REFUSED_PRIORITY if refused else priority_of(msg.topic)
        self._queue.put((priority, next(self._seq), inbound))

    def _heartbeat_now(self, link: BrokerLink, msg: paho.MQTTMessage) -> bool:
        """Take a valid heartbeat of a known device at once; False sends it the slow way (dead letters)."""
        try:
            message = decode(msg.topic, bytes(msg.payload))
        except ProtocolError:
            return False
        if not isinstance(message, Heartbeat) or message.device_id not in self._known:
            return False
        self.metrics.count_received("heartbeat")
        with self._liveness_lock:
            self._track_liveness(message, self._clock_ms())
        link.ack(msg.mid, msg.qos)
        return True

    # -- writer thread -----------------------------------------------------------------------------
    def _write_loop(self) -> None:
        while not self._stop.is_set():
            batch = self._take_batch()
            if batch:
                self._handle(batch)

    def _take_batch(self) -> list[Inbound]:
        try:
            first = self._queue.get(timeout=0.2)
        except queue.Empty:
            return []
        batch = [first[2]]
        while len(batch) < _MAX_BATCH:
            try:
                batch.append(self._queue.get_nowait()[2])
            except queue.Empty:
                break
        return batch

    def _handle(self, batch: list[Inbound]) -> None:
        for inbound in batch:
            self.metrics.count_received(inbound.topic.rsplit("/", 1)[-1][:16])
        plan = plan_batch(batch, self._is_known, self._clock_ms())
        with self._liveness_lock:
            for inbound, message in plan.liveness:
                self._track_liveness(message, None if inbound.retain else inbound.received_ms)
        stored = (
            self._commit_with_retry(plan)
            if plan.events or plan.rejects or plan.status_changes
            else Stored(set(), Reuse())
        )
        self._acknowledge(plan, stored)

    def _commit_with_retry(self, plan: Plan) -> Stored:
        """Store the batch; while the database is away, keep trying and acknowledge nothing."""
        delay = 0.2
        while True:
            started = time.monotonic()
            try:
                with self._sessions.begin() as session:
                    stored = store_batch(session, plan, dead_letter_cap=self._dead_letter_cap)
                self.metrics.observe_store_latency(time.monotonic() - started)
                return stored
            except SQLAlchemyError as exc:
                self.metrics.count_store_error()
                log.error(
                    "gateway: database write failed, retrying in %.1fs (nothing acked): %s",
                    delay,
                    str(exc).splitlines()[0][:200],
                )
                if self._stop.wait(delay):
                    raise
                delay = min(delay * 2, 5.0)

    def _acknowledge(self, plan: Plan, stored: Stored) -> None:
        reuse = stored.reuse
        acked: set[tuple[str, str]] = set()  # the keys of every accepted copy, to tell stored from repeated
        for inbound, event in reuse.accepted:
            link = self._links[inbound.link]
            link.ack(inbound.mid, inbound.qos)
            link.publish(ack_topic(event.device_id), encode_ack(Ack(event.msg_id, "accepted")))
            acked.add((event.device_id, event.msg_id))
        for inbound, alarm, derived in reuse.alarms:
            link = self._links[inbound.link]
            link.ack(inbound.mid, inbound.qos)
            link.publish(
                ack_topic(alarm.device_id),
                encode_ack(Ack(alarm.msg_id, "accepted", warning="msg_id_reused")),
            )
            acked.add((alarm.device_id, derived))
            self.metrics.count_rejected("msg_id_reused_accepted")
            log.warning(
                "gateway: alarm under the reused msg_id %s of %s accepted, stored as %s",
                alarm.msg_id,
                alarm.device_id,
                derived,
            )
        stored_now = len(acked & stored.inserted)
        self.metrics.count_stored(stored_now, len(reuse.accepted) + len(reuse.alarms) - stored_now)
        for _inbound, event in plan.clock_skewed:
            self.metrics.count_rejected("clock_skew_accepted")
            log.warning(
                "gateway: alarm %s of %s accepted with an implausible device clock (ts %s)",
                event.msg_id,
                event.device_id,
                event.ts,
            )
        for inbound, _msg in plan.liveness:
            self._links[inbound.link].ack(inbound.mid, inbound.qos)
        for inbound in plan.empty:
            self._links[inbound.link].ack(inbound.mid, inbound.qos)
        self.dead_letters_counted_only += stored.counted_only
        for reject in plan.rejects + reuse.refused:
            self.metrics.count_rejected(reject.reason)
            log.warning(
                "gateway: refused a message on %r: %s (%s)",
                reject.inbound.topic[:120],
                reject.reason,
                reject.detail,
            )
            link = self._links[reject.inbound.link]
            link.ack(reject.inbound.mid, reject.inbound.qos)
            if reject.device_id is not None:
                link.publish(
                    ack_topic(reject.device_id), encode_ack(Ack(reject.msg_id, "rejected", reject.reason))
                )
        for inbound in plan.clear_retained:
            self._links[inbound.link].clear_retained(inbound.topic)
            self.retained_cleared += 1
            log.warning("gateway: cleared the retained message on %r", inbound.topic[:120])
        if stored_now or plan.status_changes:
            self._links[0].publish(HINT_EVENTS, b"", qos=0)

    # -- registry and liveness ---------------------------------------------------------------------
    def _load_registry_until_ready(self) -> None:
        delay = 0.5
        while not self._stop.is_set():
            try:
                with self._sessions() as session:
                    self._known = known_device_ids(session)
                log.info("gateway %s: %d registered devices", self._name, len(self._known))
                return
            except SQLAlchemyError as exc:
                log.error(
                    "gateway: cannot read the device registry yet (%s); retrying", exc.__class__.__name__
                )
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    def _is_known(self, device_id: str) -> bool:
        if device_id in self._known:
            return True
        now = time.monotonic()
        if now - self._unknown_checked.get(device_id, -1e9) < _UNKNOWN_RECHECK_S:
            return False
        self._unknown_checked[device_id] = now
        if len(self._unknown_checked) > 10_000:  # a flood of made-up ids must not grow memory for ever
            self._unknown_checked.clear()
        try:
            with self._sessions() as session:
                self._known = known_device_ids(session)
        except SQLAlchemyError:
            log.warning("gateway: registry lookup failed; treating %r as unknown for now", device_id)
        return device_id in self._known

    def _track_liveness(self, message: Heartbeat | Status, received_ms: int | None) -> None:
        """Remember what a heartbeat or status says; ``received_ms`` None means "not a sign of life now"."""
        current = self._liveness.setdefault(message.device_id, {"device_id": message.device_id})
        if received_ms is not None:
            current["last_seen_ms"] = max(current.get("last_seen_ms") or 0, received_ms)
        if received_ms is not None:
            self._online[message.device_id] = message.online if isinstance(message, Status) else True
        if isinstance(message, Heartbeat):
            current["online"] = True
            for field in ("battery", "firmware", "signal"):
                if getattr(message, field) is not None:
                    current[field] = getattr(message, field)
            if message.interval_s is not None:
                current["heartbeat_interval_s"] = message.interval_s
        elif received_ms is not None:
            current["online"] = message.online
            current["online_changed_ms"] = received_ms
            # A live online/offline report (the Last Will included) reaches the database at once.
            self._liveness_urgent = True

    def _flush_loop(self) -> None:
        while not self._stop.wait(0.1):
            if self._liveness_urgent or time.monotonic() - self._last_flush >= self._liveness_flush_s:
                self._flush_liveness()

    def _flush_liveness(self) -> None:
        self._last_flush = time.monotonic()
        self._liveness_urgent = False
        with self._liveness_lock:
            self.metrics.devices_online = sum(self._online.values())
            if not self._liveness:
                return
            pending, self._liveness = list(self._liveness.values()), {}
        try:
            # Short transactions: SQLite has one writer, and an alarm's commit slips in between chunks.
            for i in range(0, len(pending), _LIVENESS_CHUNK):
                with self._sessions.begin() as session:
                    store_liveness(session, pending[i : i + _LIVENESS_CHUNK])
        except SQLAlchemyError as exc:
            log.warning("gateway: liveness flush failed (%s); will retry", exc.__class__.__name__)
            with self._liveness_lock:
                for update in pending:  # keep the newest of what we had and what arrived since
                    self._liveness.setdefault(update["device_id"], update)
