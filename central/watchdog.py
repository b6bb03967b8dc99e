"""The watchdog: it presses a test alarm through the whole chain, judges the chain every second, tells every
console when it breaks and pages the supervisor once — from central, which does not depend on the broker,
the gateway or the monitor it watches.

The probe: every ``interval`` the watchdog publishes an alarm of the service's own test device
(``carealarm-probe``, a client marked ``system`` that no page, list or report shows) to the broker. It goes
the way a client's alarm goes — broker, gateway, database, monitor, the change feed — and when the feed
brings it back the watchdog measures the whole trip. A probe not back within ``late_after`` means the chain
is broken, whatever part broke (this is what no commercial alarm receiver does).

Paging: when the chain has been broken for ``page_after`` seconds, one ``chain_incidents`` row is written
(a unique index lets one central of several win) and the supervisors on duty get one e-mail / webhook
through the channels directly — not through the monitor's notifier, which may be the part that is down.
When the chain is whole again the incident is closed and they are told so.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

import paho.mqtt.client as paho
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session

from care.channels import Channel, send_now
from care.roster import on_duty
from messaging.mqtt import MqttConfig, make_client
from storage.db import SessionFactory
from storage.models import ChainIncident, Client, Device, DeviceEvent

from .health import ChainHealth, ProbeView, Problem, judge, read_chain

__all__ = ["PROBE_DEVICE", "ProbeSender", "Watchdog", "ensure_probe_device"]

log = logging.getLogger(__name__)

PROBE_DEVICE: Final = "carealarm-probe"
_PROBE_CLIENT = "carealarm end-to-end probe (the service's own test device)"
_CHECK_EVERY_S: Final = 1.0


def ensure_probe_device(session: Session, now_ms: int) -> None:
    """The probe's system client and device, created once (the gateway takes only known devices)."""
    if session.get(Device, PROBE_DEVICE) is not None:
        return
    client = Client(name=_PROBE_CLIENT, address="", district="", created_ms=now_ms, system=True)
    session.add(client)
    session.flush()
    session.add(
        Device(
            id=PROBE_DEVICE, client_id=client.id, kind="probe", label="End-to-end probe", created_ms=now_ms
        )
    )


class ProbeSender:
    """Publishes the probe's alarms with the service's own MQTT account (its own connection)."""

    def __init__(self, cfg: MqttConfig) -> None:
        self._client, props = make_client(cfg, f"carealarm-probe-{uuid.uuid4().hex[:10]}")
        self._connected = threading.Event()
        self._client.on_connect = lambda _c, _u, _f, reason, _p: (
            None if getattr(reason, "is_failure", False) else self._connected.set()
        )
        self._client.on_disconnect = lambda *_a: self._connected.clear()
        self._client.connect_async(cfg.host, cfg.port, keepalive=15, properties=props)
        self._client.loop_start()

    def send(self, msg_id: str, now_ms: int) -> None:
        """Publish one probe alarm; raise ConnectionError when the broker cannot be reached."""
        if not self._connected.is_set():
            raise ConnectionError("no connection to the MQTT broker")
        body = json.dumps({"msg_id": msg_id, "ts": now_ms, "alarm_kind": "other"}).encode()
        info = self._client.publish(f"carealarm/v1/devices/{PROBE_DEVICE}/alarm", body, qos=1)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            raise ConnectionError(f"publish failed ({paho.error_string(info.rc)})")

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


@dataclass
class _Probe:
    pending: dict[str, int] = field(default_factory=dict)  # msg_id -> sent ms (this central's probes)
    next_ms: int = 0
    send_error: str | None = None
    last_latency_ms: int | None = None
    feed_seen_ms: int | None = None  # when the feed last delivered a change of the probe's alert


class Watchdog:
    """Judge the chain every second; tell consoles on change; page once per incident; run the probe."""

    def __init__(
        self,
        *,
        sessions: SessionFactory,
        publish: Callable[[dict[str, Any]], None],
        clock_ms: Callable[[], int] = lambda: int(time.time() * 1000),
        probe: ProbeSender | None = None,
        probe_interval_s: float = 60.0,
        probe_late_s: float = 20.0,
        channels: dict[str, Channel] | None = None,
        page_after_s: float = 10.0,
        expect: tuple[str, ...] = ("gateway", "monitor"),
        scope: str = "chain",
        feed_ready: Callable[[], bool] = lambda: True,
    ) -> None:
        self._sessions = sessions
        self._publish = publish
        self._clock_ms = clock_ms
        self._sender = probe
        self._probe_interval_ms = int(probe_interval_s * 1000) if probe is not None else 0
        self._probe_late_ms = int(probe_late_s * 1000)
        self._channels = channels or {}
        self._page_after_ms = int(page_after_s * 1000)
        self._expect = expect
        self._scope = scope  # "chain": the whole chain (central); "central": central itself (the monitor)
        # A probe sent before the feed has read its starting position could be changed before that position,
        # never shown on the feed, and judged lost: the first probe waits for the feed.
        self._feed_ready = feed_ready
        self._started_ms = clock_ms()
        self._probe = _Probe(next_ms=self._started_ms)
        self._broken_since: int | None = None
        self._incident_handled = False
        self._paged = False  # this process paged the running incident (so it sends the all-clear)
        self._recipients: list[str] = []
        self._recipients_ms = -(10**15)
        self.health = ChainHealth(ok=True, problems=(), checked_ms=self._started_ms)
        self.registry = CollectorRegistry()
        self._m_ok = Gauge(
            "carealarm_chain_ok", "1 when the whole alarm chain is working", registry=self.registry
        )
        self._m_problem = Gauge(
            "carealarm_chain_problem",
            "1 for each problem the watchdog sees",
            ["code"],
            registry=self.registry,
        )
        self._m_unhandled = Gauge(
            "carealarm_events_unhandled", "Device events stored and not yet handled", registry=self.registry
        )
        self._m_unhandled_age = Gauge(
            "carealarm_events_oldest_unhandled_age_seconds",
            "Age of the oldest device event not yet handled (0: none)",
            registry=self.registry,
        )
        self._m_beat_age = Gauge(
            "carealarm_component_beat_age_seconds",
            "Seconds since each component's newest heartbeat",
            ["component"],
            registry=self.registry,
        )
        self._m_probe = Histogram(
            "carealarm_probe_latency_seconds",
            "End-to-end probe alarm: published to the broker -> back on the console feed",
            buckets=(0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=self.registry,
        )
        self._m_probe_sent = Counter(
            "carealarm_probes_sent_total", "Probe alarms sent", registry=self.registry
        )
        self._m_probe_lost = Counter(
            "carealarm_probes_lost_total", "Probe alarms that never came back", registry=self.registry
        )
        self._m_paged = Counter(
            "carealarm_chain_incidents_paged_total",
            "Broken-chain incidents the supervisor was paged for",
            registry=self.registry,
        )
        self._problem_codes: set[str] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._probe_arrived = asyncio.Event()

    # -- what others ask --------------------------------------------------------------------------------
    def render_metrics(self) -> str:
        return generate_latest(self.registry).decode()

    def feed_saw_probe(self) -> None:
        """The feed (on this event loop) delivered a change of the probe's alert: a probe is through."""
        self._probe.feed_seen_ms = self._clock_ms()
        self._probe_arrived.set()

    # -- the loop ---------------------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        self._loop = asyncio.get_running_loop()
        while not stop.is_set():
            try:
                await self.check_once()
            except Exception:  # the watchdog must outlive anything it watches
                log.exception("watchdog: check failed")
            waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._probe_arrived.wait())]
            await asyncio.wait(waiters, timeout=_CHECK_EVERY_S, return_when=asyncio.FIRST_COMPLETED)
            for w in waiters:
                w.cancel()
        if self._sender is not None:
            await asyncio.to_thread(self._sender.close)

    async def check_once(self) -> ChainHealth:
        now = self._clock_ms()
        self._probe_arrived.clear()
        await asyncio.to_thread(self._send_probe_if_due, now)
        try:
            runs, backlog = await asyncio.to_thread(self._read, now)
        except SQLAlchemyError as exc:
            if self._scope != "chain":
                return self.health  # central's watchdog reports the database; one problem pages once
            problem = Problem(
                "database_unreachable",
                f"the database cannot be reached ({exc.__class__.__name__}): alarms cannot be stored",
            )
            health = ChainHealth(ok=False, problems=(problem,), checked_ms=now, database=False)
        else:
            await asyncio.to_thread(self._settle_probes)
            if self._channels:
                await asyncio.to_thread(self._supervisors, now)  # known before the database may go
            view = ProbeView(
                interval_ms=self._probe_interval_ms,
                late_after_ms=self._probe_late_ms,
                oldest_pending_sent_ms=min(self._probe.pending.values(), default=None),
                send_error=self._probe.send_error,
            )
            health = judge(
                now,
                runs,
                backlog,
                view,
                started_ms=self._started_ms,
                expect=self._expect,
                whole_chain=self._scope == "chain",
            )
            self._metrics(now, runs, backlog)
        self._set(health)
        await asyncio.to_thread(self._incident, health, now)
        return health

    def _read(self, now: int) -> tuple[Any, Any]:
        with self._sessions() as session:
            return read_chain(session, now)

    def _set(self, health: ChainHealth) -> None:
        changed = health.ok != self.health.ok or health.problems != self.health.problems
        self.health = health
        self._m_ok.set(1 if health.ok else 0)
        codes = {p.code for p in health.problems}
        for code in self._problem_codes | codes:
            self._m_problem.labels(code).set(1 if code in codes else 0)
        self._problem_codes |= codes
        if changed:
            if health.ok:
                log.warning("watchdog: the alarm chain is whole again")
            else:
                log.error(
                    "watchdog: the alarm chain is broken: %s", "; ".join(p.text for p in health.problems)
                )
            self._publish({"type": "health", "health": health.as_json()})

    def _metrics(self, now: int, runs: Any, backlog: Any) -> None:
        self._m_unhandled.set(backlog.unhandled)
        age = (now - backlog.oldest_unhandled_ms) / 1000 if backlog.oldest_unhandled_ms is not None else 0
        self._m_unhandled_age.set(max(0.0, age))
        newest: dict[str, int] = {}
        for run in runs:
            newest[run.component] = max(newest.get(run.component, 0), run.last_beat_ms)
        for component, beat in newest.items():
            self._m_beat_age.labels(component).set(max(0.0, (now - beat) / 1000))

    # -- the probe ----------------------------------------------------------------------------------------
    def _send_probe_if_due(self, now: int) -> None:
        if self._sender is None or now < self._probe.next_ms or not self._feed_ready():
            return
        self._probe.next_ms = now + self._probe_interval_ms
        msg_id = f"probe-{now}-{uuid.uuid4().hex[:6]}"
        try:
            self._sender.send(msg_id, now)
        except ConnectionError as exc:
            self._probe.send_error = str(exc)
            return
        self._probe.send_error = None
        self._probe.pending[msg_id] = now
        self._m_probe_sent.inc()

    def _settle_probes(self) -> None:
        """Our probes the monitor has handled, once the feed has shown the probe's alert since: measured."""
        seen = self._probe.feed_seen_ms
        if not self._probe.pending or seen is None:
            return
        with self._sessions() as session:
            handled = session.execute(
                select(DeviceEvent.msg_id, DeviceEvent.handled_ms).where(
                    DeviceEvent.device_id == PROBE_DEVICE,
                    DeviceEvent.msg_id.in_(list(self._probe.pending)),
                    DeviceEvent.handled_ms.is_not(None),
                )
            ).all()
        newest = None
        for msg_id, handled_ms in handled:
            if handled_ms is None or handled_ms > seen:
                continue  # the feed has not shown this one yet (what it showed was an earlier probe)
            sent = self._probe.pending.pop(msg_id)
            newest = max(newest or sent, sent)
            self._probe.last_latency_ms = seen - sent
            self._m_probe.observe(max(0, seen - sent) / 1000)
        if newest is not None:
            # A later probe came through: earlier ones still pending were lost on the way (a broker that died
            # with them); they were late while the chain was broken, and are counted, not waited for.
            lost = [m for m, sent in self._probe.pending.items() if sent < newest]
            for msg_id in lost:
                del self._probe.pending[msg_id]
            if lost:
                self._m_probe_lost.inc(len(lost))
                log.warning(
                    "watchdog: %d probe alarm(s) never came back (lost while the chain was broken)", len(lost)
                )

    # -- paging ---------------------------------------------------------------------------------------------
    def _incident(self, health: ChainHealth, now: int) -> None:
        if health.ok:
            if self._broken_since is not None:
                self._broken_since = None
                self._incident_handled = False
                if self._paged:
                    self._paged = False
                    self._page(health, now, restored=True)
                self._close_incident(now)
            return
        if self._broken_since is None:
            self._broken_since = now
        if self._incident_handled or now - self._broken_since < self._page_after_ms:
            return
        self._incident_handled = True
        problems = json.dumps([{"code": p.code, "text": p.text} for p in health.problems])
        if health.database:
            try:
                with self._sessions.begin() as session:
                    session.add(
                        ChainIncident(scope=self._scope, started_ms=self._broken_since, problems=problems)
                    )
            except IntegrityError:
                log.info("watchdog: another process already has this incident")
                return
            except SQLAlchemyError as exc:
                log.error(
                    "watchdog: cannot record the incident (%s); paging all the same", exc.__class__.__name__
                )
        # With the database down there is no row to share: this process pages (to the people it last knew).
        self._paged = True
        if self._page(health, now, restored=False):
            self._m_paged.inc()
        if health.database:
            with contextlib.suppress(SQLAlchemyError), self._sessions.begin() as session:
                session.execute(
                    update(ChainIncident)
                    .where(ChainIncident.scope == self._scope, ChainIncident.ended_ms.is_(None))
                    .values(paged_ms=now)
                )

    def _close_incident(self, now: int) -> None:
        try:
            with self._sessions.begin() as session:
                session.execute(
                    update(ChainIncident)
                    .where(ChainIncident.scope == self._scope, ChainIncident.ended_ms.is_(None))
                    .values(ended_ms=now)
                    .execution_options(synchronize_session=False)
                )
        except SQLAlchemyError as exc:
            log.error("watchdog: cannot close the incident (%s)", exc.__class__.__name__)

    def _supervisors(self, now: int) -> list[str]:
        """The e-mail addresses of the supervisors on duty, re-read at most every 30 s (and kept for when
        the database is what is down)."""
        if now - self._recipients_ms > 30_000:
            try:
                with self._sessions() as session:
                    self._recipients = [u.email for u in on_duty(session, "supervisor", now) if u.email]
                self._recipients_ms = now
            except SQLAlchemyError:
                log.warning(
                    "watchdog: supervisors not readable; paging the %d last known", len(self._recipients)
                )
        return self._recipients

    def _page(self, health: ChainHealth, now: int, *, restored: bool) -> int:
        """Tell the supervisors on duty, by every channel there is; return how many messages went out."""
        if restored:
            subject = "[carealarm] RESTORED: the alarm chain is working again"
            body = "The care-station alarm chain is whole again. Return to the normal procedure.\n"
        else:
            subject = "[carealarm] ALARM CHAIN BROKEN: use the manual procedure"
            body = (
                "The care station's alarm chain is broken; alarms may not reach the console:\n"
                + "".join(f"- {p.text}\n" for p in health.problems)
                + "\nFollow the manual fall-back procedure until you are told it is restored.\n"
            )
        sent = send_now(self._channels, self._supervisors(now), "supervisor", subject, body)
        log.warning("watchdog: %s paged to %d recipient(s)", "all-clear" if restored else "incident", sent)
        return sent
