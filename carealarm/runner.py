"""Run the components — every one in one process (``carealarm run``) or one alone — until a signal."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer

import uvicorn
from sqlalchemy import Engine

from care.channels import Channel, channels_from_settings
from care.notifier import Notifier
from central.app import CentralContext, create_app
from central.calls.signalling import CallsConfig
from central.feed import Broadcaster
from central.hardening import WebSecurity
from central.insider import InsiderWatch
from central.watchdog import ProbeSender, Watchdog, ensure_probe_device
from devices.simulator.fleet import load_fleet, run_fleet
from gateway.service import Gateway
from messaging.accounts import SERVICE_USER, BrokerError, DynsecAccounts, service_password
from messaging.mqtt import HINT_ALERTS, HINT_EVENTS, Hints, MqttConfig
from monitor.service import Monitor
from storage.db import SessionFactory, make_engine, make_session_factory, schema_revision, upgrade
from storage.registry import device_password_hashes
from storage.service_runs import keep_beating

from .broker import EmbeddedBroker, TlsListener
from .demo import start_demo
from .metrics_http import serve_metrics
from .settings import Settings
from .supervise import BrokerChild, Supervisor

__all__ = ["ALL_COMPONENTS", "RunOptions", "run"]

log = logging.getLogger("carealarm")

ALL_COMPONENTS = frozenset({"gateway", "monitor", "central"})
# How long the components get to stop by themselves after Ctrl+C or SIGTERM before the stragglers are
# cancelled: a clean stop of everything takes about 0.7 s; a paho client whose broker has gone (Ctrl+C at a
# terminal reaches Mosquitto too) needs up to 1 s. The supervisor (systemd, compose) waits 10 s or more.
STOP_GRACE_S = 1.5


@dataclass
class RunOptions:
    components: frozenset[str] = ALL_COMPONENTS
    embedded_broker: bool = False  # start Mosquitto as a child when no broker URL is configured
    migrate: bool = False  # bring the schema up to date first (`run`; in production `carealarm db upgrade`)
    demo: bool = False  # seed demo data if the database is empty
    simulate: bool = False  # run the simulated fleet in this process
    alarm_every_s: float = 60.0
    extra: dict[str, object] = field(default_factory=dict)


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: this process stops all components together."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _now_ms() -> int:
    return int(time.time() * 1000)


async def run(settings: Settings, options: RunOptions) -> None:
    """Start the chosen components, block until SIGINT/SIGTERM, then stop them in reverse order."""
    stop = asyncio.Event()
    keeper = _BrokerKeeper()

    def on_signal() -> None:
        """Stop everything; a broker that ends from now on stays down (a terminal's Ctrl+C reaches it too)."""
        stop.set()
        keeper.stop_restarting()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)

    engine = await _database(settings, options)
    sessions = make_session_factory(engine)
    if options.demo:
        options = _seed_demo(settings, options, sessions)
    mqtt = _broker(settings, options, sessions, keeper)
    service = _Service(settings, options, sessions, mqtt, stop, keeper)
    await service.start()
    failure = await service.wait()
    await service.close()
    engine.dispose()
    if failure:
        raise SystemExit(f"carealarm: {failure}")


async def _database(settings: Settings, options: RunOptions) -> Engine:
    """The engine, once the schema is up to date (brought there with ``migrate``, else refused)."""
    db_url = settings.effective_database_url
    if options.migrate:
        await asyncio.to_thread(upgrade, db_url)
    else:
        current, head = await asyncio.to_thread(schema_revision, db_url)
        if current != head:
            raise SystemExit(
                f"carealarm: the database schema is at {current or 'nothing'}, this version needs {head}: "
                "run `carealarm db upgrade` first"
            )
    return make_engine(db_url)


def _seed_demo(settings: Settings, options: RunOptions, sessions: SessionFactory) -> RunOptions:
    """Seed the demo into an empty database; no simulated fleet when there was nothing to seed."""
    if settings.env == "production":
        raise SystemExit("refusing to seed demo users and devices in production")
    # Seeds only an empty database: existing devices keep their passwords, the fleet file is reused.
    if not start_demo(sessions, settings, _now_ms()) and options.simulate:
        return dataclasses.replace(options, simulate=False)
    return options


@dataclass
class _BrokerKeeper:
    """The embedded broker and its supervisor, once started (the signal handler reaches them here)."""

    broker: EmbeddedBroker | None = None
    supervisor: Supervisor | None = None  # restarts the embedded broker; its `health` says how it is doing

    def stop_restarting(self) -> None:
        if self.supervisor is not None:
            self.supervisor.stop_restarting()

    def stop(self) -> None:
        if self.supervisor is not None:
            self.supervisor.stop()
        if self.broker is not None:
            self.broker.stop()


def _broker(
    settings: Settings, options: RunOptions, sessions: SessionFactory, keeper: _BrokerKeeper
) -> MqttConfig:
    """The broker the service uses: the configured one, the embedded one (started here), or the embedded
    one another `carealarm run` (or `carealarm broker`) started with the same data directory."""
    if settings.mqtt_url:
        ca = str(settings.mqtt_ca_file) if settings.mqtt_ca_file else None
        return MqttConfig.from_url(settings.mqtt_url, ca_file=ca)
    if not options.embedded_broker:
        return MqttConfig(
            "127.0.0.1", settings.embedded_mqtt_port, SERVICE_USER, service_password(settings.broker_dir)
        )
    broker = EmbeddedBroker(settings.broker_dir, settings.embedded_mqtt_port, tls=tls_listener(settings))
    with sessions() as session:
        hashes = device_password_hashes(session)
    try:
        broker.start(hashes)
    except BrokerError as exc:
        raise SystemExit(f"carealarm: {exc}") from None

    def restart_broker() -> None:
        """Start the broker again with the credentials of every device registered by now."""
        with sessions() as session:
            hashes = device_password_hashes(session)
        broker.start(hashes)

    keeper.broker = broker
    keeper.supervisor = Supervisor(BrokerChild(broker, restart=restart_broker))
    keeper.supervisor.start()
    return MqttConfig.from_url(broker.url)


class _Service:
    """The components of one `carealarm run`: started in order, stopped together."""

    def __init__(
        self,
        settings: Settings,
        options: RunOptions,
        sessions: SessionFactory,
        mqtt: MqttConfig,
        stop: asyncio.Event,
        keeper: _BrokerKeeper,
    ) -> None:
        self.settings, self.options, self.sessions, self.mqtt = settings, options, sessions, mqtt
        self.stop, self.keeper = stop, keeper
        self.hints = Hints(mqtt, f"carealarm-hints-{uuid.uuid4().hex[:10]}")
        self.tasks: list[asyncio.Task[None]] = []
        self.run_instance = f"{socket.gethostname()}/{os.getpid()}"
        self.metrics_sources: list[Callable[[], str]] = []
        self.gateway: Gateway | None = None
        self.server: _Server | None = None
        self.central_task: asyncio.Task[None] | None = None
        self.metrics_server: ThreadingHTTPServer | None = None

    def record_run(self, component: str, state: Callable[[], dict[str, object]] | None = None) -> None:
        """Record the component's run in service_runs, beating with what it says of itself (the reports
        tell its downtime from a device's; the watchdog judges the chain from it)."""
        beating = keep_beating(self.sessions, component, self.run_instance, self.stop, state=state)
        self.tasks.append(asyncio.create_task(beating, name=f"{component}-run"))

    async def start(self) -> None:
        components = self.options.components
        if "gateway" in components:
            await self._start_gateway()
        if "monitor" in components:
            self._start_monitor()
        if "central" in components:
            self._start_central()
        self.hints.start()
        if self.settings.metrics_port and "central" not in components:
            self.metrics_server = serve_metrics(
                self.settings.http_host, self.settings.metrics_port, self.metrics_sources
            )
        if self.options.simulate:
            self._start_simulation()
        await self._announce()

    async def _start_gateway(self) -> None:
        self.gateway = Gateway(
            mqtt=self.mqtt,
            sessions=self.sessions,
            name=self.settings.gateway_name,
            share_group=self.settings.gateway_share_group or None,
        )
        self.metrics_sources.append(self.gateway.metrics.render)
        await asyncio.to_thread(self.gateway.start)
        self.record_run("gateway", self.gateway.health_state)

    def _start_monitor(self) -> None:
        settings, hints = self.settings, self.hints
        channels = _channels(settings)
        notifier = Notifier(sessions=self.sessions, channels=channels)
        self.tasks.append(asyncio.create_task(notifier.run(self.stop), name="notifier"))
        monitor = Monitor(
            sessions=self.sessions,
            notify_alerts=lambda: hints.publish(HINT_ALERTS),
            notify_people=notifier.wake,
            channels=frozenset(channels),
            publish=hints.publish_command,
            timezone=settings.timezone,
            poll_interval_s=settings.poll_interval_s,
            sweep_interval_s=settings.device_sweep_interval_s,
        )
        self.metrics_sources.append(monitor.metrics.render)
        hints.on(HINT_EVENTS, monitor.wake)
        self.tasks.append(asyncio.create_task(monitor.run(self.stop), name="monitor"))
        self.record_run("monitor", monitor.health_state)
        if "central" not in self.options.components:
            # Central cannot report its own death: the monitor's process watches it and pages once.
            central_watch = Watchdog(
                sessions=self.sessions,
                publish=lambda _message: None,
                channels=channels,
                page_after_s=settings.watchdog_page_after_s,
                expect=("central",),
                scope="central",
            )
            self.tasks.append(asyncio.create_task(central_watch.run(self.stop), name="central-watch"))

    def _start_central(self) -> None:
        settings, hints = self.settings, self.hints
        broadcaster = Broadcaster(self.sessions, poll_interval_s=settings.poll_interval_s)
        hints.on(HINT_ALERTS, broadcaster.wake)
        watchdog = _watchdog(settings, self.sessions, broadcaster, self.mqtt)
        self.metrics_sources.append(watchdog.render_metrics)
        ctx = CentralContext(
            sessions=self.sessions,
            broadcaster=broadcaster,
            # The console that acted sees its own change at once; other processes hear the hint.
            notify_alerts=_both(broadcaster.wake, lambda: hints.publish(HINT_ALERTS)),
            session_hours=settings.session_hours,
            secure_cookies=settings.env == "production",
            metrics_sources=self.metrics_sources,
            timezone=settings.timezone,
            watchdog=watchdog,
            insider=InsiderWatch(
                self.sessions,
                _channels(settings),
                threshold=settings.insider_threshold,
                clock_ms=lambda: int(time.time() * 1000),
            ),
            calls=CallsConfig(
                ice_servers=settings.ice_servers,
                turn_secret=settings.turn_secret,
                public_url=settings.public_url or f"http://{settings.http_host}:{settings.http_port}",
                mqtt=self.mqtt,
            ),
            # Device changes reach whichever broker the service uses, at once (its dynamic-security plugin).
            device_accounts=DynsecAccounts(self.mqtt),
            broker_supervisor=self.keeper.supervisor,
        )
        security = WebSecurity(
            production=settings.env == "production",
            metrics_token=settings.metrics_token,
            allowed_origins=tuple(o for o in (settings.public_url, *settings.allowed_origins) if o),
        )
        config = uvicorn.Config(
            create_app(ctx, security=security),
            host=settings.http_host,
            port=settings.http_port,
            log_level="warning",
            ws_ping_interval=20,
            ws_ping_timeout=20,
        )
        self.server = _Server(config)
        self.central_task = asyncio.create_task(self.server.serve(), name="central")
        self.tasks.append(self.central_task)
        self.record_run("central", broadcaster.health_state)

    def _start_simulation(self) -> None:
        settings, options, mqtt = self.settings, self.options, self.mqtt
        fleet = load_fleet(settings.data_dir / "fleet.json")
        device_broker = MqttConfig(mqtt.host, mqtt.port, tls=mqtt.tls)
        # Every device heartbeats, the tablets included (their video endpoint below is a second connection
        # of the same device that answers calls; the simulated one reports liveness and ignores rings).
        self.tasks.append(
            asyncio.create_task(
                _discard(
                    run_fleet(fleet, device_broker, self.stop, alarm_every_s=self.options.alarm_every_s)
                ),
                name="simulator",
            )
        )
        if "central" in options.components and any(c.kind == "video" for c in fleet):
            # Imported only when needed: the video endpoints bring in WebRTC (aiortc), heavy to load.
            from devices.video.fleet import run_video_devices

            central_url = f"http://{settings.http_host}:{settings.http_port}"
            self.tasks.append(
                asyncio.create_task(
                    run_video_devices(fleet, device_broker, central_url, self.stop), name="video-devices"
                )
            )

    async def _announce(self) -> None:
        settings, server = self.settings, self.server
        if server is not None and self.central_task is not None:
            while not server.started and not self.central_task.done():
                await asyncio.sleep(0.05)
            if server.started:
                print(f"carealarm: console at http://{settings.http_host}:{settings.http_port}", flush=True)
        embedded = self.keeper.broker is not None
        print(
            f"carealarm: running {', '.join(sorted(self.options.components))}"
            f"{' with the embedded broker on 127.0.0.1:' + str(self.mqtt.port) if embedded else ''}"
            f"{' and a simulated fleet' if self.options.simulate else ''}; Ctrl+C stops",
            flush=True,
        )

    async def wait(self) -> str | None:
        """Until the stop (None) or a component ends by itself (what failed)."""
        done_early = asyncio.create_task(_first_failure(self.tasks))
        stop_wait = asyncio.create_task(self.stop.wait())
        done, _ = await asyncio.wait({stop_wait, done_early}, return_when=asyncio.FIRST_COMPLETED)
        # A component that ends before we were asked to stop has failed; after the stop, ending is the point
        # (a signal during start-up may already have ended the tasks that stop on it, run records among them).
        failure = done_early.result() if done_early in done and not self.stop.is_set() else None
        done_early.cancel()
        return failure

    async def close(self) -> None:
        """Stop every component side by side, then the broker."""
        self.stop.set()
        self.keeper.stop_restarting()  # also when a component failed: the broker is stopped below
        log.info("stopping")
        if self.server is not None:
            self.server.should_exit = True
        # Everything stops side by side: a paho client whose broker has gone takes up to 1 s to stop.
        closing = [asyncio.create_task(asyncio.to_thread(self.hints.stop), name="hints")]
        if self.gateway is not None:
            closing.append(asyncio.create_task(asyncio.to_thread(self.gateway.stop), name="gateway"))
        await _stop_within([*self.tasks, *closing], STOP_GRACE_S)
        if self.metrics_server is not None:
            self.metrics_server.shutdown()
        self.keeper.stop()


def _channels(settings: Settings) -> dict[str, Channel]:
    try:
        return channels_from_settings(settings)
    except ValueError as exc:
        raise SystemExit(f"carealarm: notification settings: {exc}") from None


def _watchdog(
    settings: Settings, sessions: SessionFactory, broadcaster: Broadcaster, mqtt: MqttConfig
) -> Watchdog:
    """Central's watchdog with the end-to-end probe on the service's own MQTT account."""
    with sessions.begin() as session:
        ensure_probe_device(session, _now_ms())
    channels = _channels(settings)
    watchdog = Watchdog(
        sessions=sessions,
        publish=broadcaster.publish,
        feed_ready=lambda: broadcaster.cursor is not None,
        probe=ProbeSender(mqtt) if settings.probe_interval_s > 0 else None,
        probe_interval_s=settings.probe_interval_s,
        probe_late_s=settings.probe_late_s,
        channels=channels,
        page_after_s=settings.watchdog_page_after_s,
    )
    broadcaster.on_probe = watchdog.feed_saw_probe
    return watchdog


def tls_listener(settings: Settings) -> TlsListener | None:
    """The embedded broker's TLS listener for devices, when one is configured."""
    if not settings.embedded_mqtt_tls_port or not settings.mqtt_tls_certfile or not settings.mqtt_tls_keyfile:
        return None
    return TlsListener(settings.embedded_mqtt_tls_port, settings.mqtt_tls_certfile, settings.mqtt_tls_keyfile)


def _both(first: Callable[[], None], second: Callable[[], None]) -> Callable[[], None]:
    def call() -> None:
        first()
        second()

    return call


async def _discard(coro: Awaitable[object]) -> None:
    await coro


async def _stop_within(tasks: list[asyncio.Task[None]], grace_s: float) -> None:
    """Wait ``grace_s`` for ``tasks`` to end by themselves, then cancel the rest and say which."""
    if not tasks:
        return
    _, pending = await asyncio.wait(tasks, timeout=grace_s)
    if pending:
        log.warning(
            "cancelling what did not stop within %.1f s: %s",
            grace_s,
            ", ".join(sorted(t.get_name() for t in pending)),
        )
        for task in pending:
            task.cancel()
        await asyncio.wait(pending)


async def _first_failure(tasks: list[asyncio.Task[None]]) -> str | None:
    """Return a description of the first component that ends by itself (which is a failure)."""
    if not tasks:
        await asyncio.Event().wait()
    done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for task in done:
        exc = task.exception()
        return (
            f"component {task.get_name()} stopped: {exc!r}" if exc else f"component {task.get_name()} stopped"
        )
    return None
