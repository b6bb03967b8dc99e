"""The gateway process: paho's network thread feeds a priority queue; one writer thread stores and acks.

Order of work for every event (the rule that matters most)::

    broker --QoS1--> on_message --queue--> writer: decode, INSERT .. ON CONFLICT DO NOTHING, COMMIT
                                                   then PUBACK (manual ack) and the application ack

If the process dies before the commit, the broker still holds the message (no PUBACK was sent) and
redelivers it to the persistent session; if it dies after the commit but before the acks, the redelivered
copy hits the unique key, is not stored again, and is acknowledged.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable

import paho.mqtt.client as paho
from sqlalchemy.exc import SQLAlchemyError

from carealarm.mqtt import HINT_EVENTS, MqttConfig, make_client
from protocol.v1 import DEVICE_KINDS, Ack, Heartbeat, Status, ack_topic, encode_ack
from storage.db import SessionFactory

from .ingest import Inbound, Plan, plan_batch, priority_of
from .metrics import Metrics
from .store import LivenessUpdate, known_device_ids, store_plan

__all__ = ["DEVICE_TOPICS", "Gateway"]

log = logging.getLogger(__name__)

DEVICE_TOPICS = DEVICE_KINDS
# Up to this many messages share one transaction: one commit (one fsync) for many messages is what makes
# durable ingest fast; alarms still go first because the queue is ordered by priority.
_MAX_BATCH = 500
# How many un-acked QoS 1 messages the broker may have in flight to us (MQTT 5 Receive Maximum).
_RECEIVE_MAXIMUM = 2000
# Liveness (last seen, battery) is written in batches, not once per heartbeat.
_LIVENESS_FLUSH_S = 5.0
# A device that is not registered is looked up again after this long (it may have been provisioned).
_UNKNOWN_RECHECK_S = 30.0


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
        clock_ms: Callable[[], int] = lambda: int(time.time() * 1000),
    ) -> None:
        self._mqtt = mqtt
        self._sessions = sessions
        self._name = name
        self._share_group = share_group
        self.metrics = metrics or Metrics()
        self._clock_ms = clock_ms
        self._liveness_flush_s = liveness_flush_s
        self._queue: queue.PriorityQueue[tuple[int, int, Inbound]] = queue.PriorityQueue()
        self._seq = itertools.count()
        self._stop = threading.Event()
        self._known: set[str] = set()
        self._unknown_checked: dict[str, float] = {}
        self._liveness: dict[str, LivenessUpdate] = {}
        self._last_flush = time.monotonic()
        self._writer: threading.Thread | None = None
        self.connected = threading.Event()
        self._client, self._connect_props = make_client(
            mqtt,
            f"carealarm-gateway-{name}",
            persistent=True,
            manual_ack=True,
            receive_maximum=_RECEIVE_MAXIMUM,
        )
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message

    # -- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> None:
        self._load_registry_until_ready()
        self._writer = threading.Thread(
            target=self._write_loop, name=f"gateway-{self._name}-writer", daemon=True
        )
        self._writer.start()
        # clean_start=False: keep the session, so messages published while we were away are delivered.
        self._client.connect_async(
            self._mqtt.host, self._mqtt.port, keepalive=30, clean_start=False, properties=self._connect_props
        )
        self._client.loop_start()

    def stop(self) -> None:
        self._stop.set()
        self._client.disconnect()
        self._client.loop_stop()
        if self._writer is not None:
            self._writer.join(timeout=10)

    # -- paho thread -------------------------------------------------------------------------------
    def _on_connect(self, client: paho.Client, _u: object, flags: object, reason: object, _p: object) -> None:
        if getattr(reason, "is_failure", False):
            log.error("gateway: broker refused the connection: %s", reason)
            return
        prefix = f"$share/{self._share_group}/" if self._share_group else ""
        client.subscribe([(f"{prefix}carealarm/v1/devices/+/{kind}", 1) for kind in DEVICE_TOPICS])
        log.info(
            "gateway %s connected (session present: %s)", self._name, getattr(flags, "session_present", "?")
        )
        self.connected.set()

    def _on_disconnect(self, _c: paho.Client, _u: object, _f: object, reason: object, _p: object) -> None:
        self.connected.clear()
        if not self._stop.is_set():
            log.warning("gateway %s lost the broker (%s); paho reconnects with backoff", self._name, reason)

    def _on_message(self, _c: paho.Client, _u: object, msg: paho.MQTTMessage) -> None:
        inbound = Inbound(msg.topic, bytes(msg.payload), msg.mid, msg.qos, self._clock_ms(), bool(msg.retain))
        self._queue.put((priority_of(msg.topic), next(self._seq), inbound))

    # -- writer thread -----------------------------------------------------------------------------
    def _write_loop(self) -> None:
        while not self._stop.is_set():
            batch = self._take_batch()
            if batch:
                self._handle(batch)
            if time.monotonic() - self._last_flush >= self._liveness_flush_s:
                self._flush_liveness()

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
        plan = plan_batch(batch, self._is_known)
        for inbound, message in plan.liveness:
            self._track_liveness(message, None if inbound.retain else inbound.received_ms)
        if plan.events or plan.rejects:
            inserted = self._commit_with_retry(plan)
        else:
            inserted = set()
        self._acknowledge(plan, inserted)

    def _commit_with_retry(self, plan: Plan) -> set[tuple[str, str]]:
        """Store the batch; while the database is away, keep trying and acknowledge nothing."""
        delay = 0.2
        while True:
            started = time.monotonic()
            try:
                with self._sessions.begin() as session:
                    inserted = store_plan(session, plan, [])
                self.metrics.observe_store_latency(time.monotonic() - started)
                return inserted
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

    def _acknowledge(self, plan: Plan, inserted: set[tuple[str, str]]) -> None:
        stored_now = 0
        for inbound, event in plan.events + plan.repeats:
            self._client.ack(inbound.mid, inbound.qos)
            self._client.publish(ack_topic(event.device_id), encode_ack(Ack(event.msg_id, "accepted")), qos=1)
            stored_now += (event.device_id, event.msg_id) in inserted
        self.metrics.count_stored(stored_now, len(plan.events) + len(plan.repeats) - stored_now)
        for inbound, _msg in plan.liveness:
            self._client.ack(inbound.mid, inbound.qos)
        for reject in plan.rejects:
            self.metrics.count_rejected(reject.reason)
            log.warning(
                "gateway: refused a message on %r: %s (%s)",
                reject.inbound.topic[:120],
                reject.reason,
                reject.detail,
            )
            self._client.ack(reject.inbound.mid, reject.inbound.qos)
            if reject.device_id is not None:
                nack = Ack(reject.msg_id, "rejected", reject.reason)
                self._client.publish(ack_topic(reject.device_id), encode_ack(nack), qos=1)
        if stored_now:
            self._client.publish(HINT_EVENTS, b"", qos=0)

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
        device_id = message.device_id
        current = self._liveness.setdefault(
            device_id, {"device_id": device_id, "last_seen_ms": None, "online": None, "battery": None}
        )
        if received_ms is not None:
            current["last_seen_ms"] = max(current["last_seen_ms"] or 0, received_ms)
        if isinstance(message, Heartbeat):
            current["online"] = True
            if message.battery is not None:
                current["battery"] = message.battery
        else:
            current["online"] = message.online

    def _flush_liveness(self) -> None:
        self._last_flush = time.monotonic()
        if not self._liveness:
            return
        pending, self._liveness = list(self._liveness.values()), {}
        try:
            with self._sessions.begin() as session:
                store_plan(session, Plan(), pending)
        except SQLAlchemyError as exc:
            log.warning("gateway: liveness flush failed (%s); will retry", exc.__class__.__name__)
            for update in pending:  # keep the newest of what we had and what arrived since
                self._liveness.setdefault(update["device_id"], update)
