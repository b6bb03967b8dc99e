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

import uvicorn

from care.channels import channels_from_settings
from care.notifier import Notifier
from central.app import CentralContext, create_app
from central.calls.signalling import CallsConfig
from central.feed import Broadcaster
from central.watchdog import ProbeSender, Watchdog, ensure_probe_device
from gateway.service import Gateway
from messaging.accounts import SERVICE_USER, BrokerError, DynsecAccounts, service_password
from messaging.mqtt import HINT_ALERTS, HINT_EVENTS, Hints, MqttConfig
from monitor.service import Monitor
from storage.db import SessionFactory, make_engine, make_session_factory, schema_revision, upgrade
from storage.registry import device_password_hashes
from storage.service_runs import keep_beating

from .broker import EmbeddedBroker, TlsListener
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
    supervisor: Supervisor | None = None  # restarts the embedded broker; its `health` says how it is doing

    def on_signal() -> None:
        """Stop everything; a broker that ends from now on stays down (a terminal's Ctrl+C reaches it too)."""
        stop.set()
        if supervisor is not None:
            supervisor.stop_restarting()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)

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
    engine = make_engine(db_url)
    sessions = make_session_factory(engine)

    if options.demo:
        if settings.env == "production":
            raise SystemExit("refusing to seed demo users and devices in production")
        from .demo import start_demo

        # Seeds only an empty database: existing devices keep their passwords, the fleet file is reused.
        if not start_demo(sessions, settings, _now_ms()) and options.simulate:
            options = dataclasses.replace(options, simulate=False)

    broker: EmbeddedBroker | None = None
    if settings.mqtt_url:
        ca = str(settings.mqtt_ca_file) if settings.mqtt_ca_file else None
        mqtt = MqttConfig.from_url(settings.mqtt_url, ca_file=ca)
    elif options.embedded_broker:
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

        supervisor = Supervisor(BrokerChild(broker, restart=restart_broker))
        supervisor.start()
        mqtt = MqttConfig.from_url(broker.url)
    else:
        # A component started alone joins the embedded broker that `carealarm run` (or `carealarm broker`)
        # started with the same data directory.
        mqtt = MqttConfig(
            "127.0.0.1", settings.embedded_mqtt_port, SERVICE_USER, service_password(settings.broker_dir)
        )

    hints = Hints(mqtt, f"carealarm-hints-{uuid.uuid4().hex[:10]}")
    tasks: list[asyncio.Task[None]] = []
    run_instance = f"{socket.gethostname()}/{os.getpid()}"

    def record_run(component: str, state: Callable[[], dict[str, object]] | None = None) -> None:
        """Record the component's run in service_runs, beating with what it says of itself (the reports
        tell its downtime from a device's; the watchdog judges the chain from it)."""
        beating = keep_beating(sessions, component, run_instance, stop, state=state)
        tasks.append(asyncio.create_task(beating, name=f"{component}-run"))

    gateway: Gateway | None = None
    server: _Server | None = None
    metrics_sources = []
    if "gateway" in options.components:
        gateway = Gateway(
            mqtt=mqtt,
            sessions=sessions,
            name=settings.gateway_name,
            share_group=settings.gateway_share_group or None,
        )
        metrics_sources.append(gateway.metrics.render)
        await asyncio.to_thread(gateway.start)
        record_run("gateway", gateway.health_state)
    if "monitor" in options.components:
        try:
            channels = channels_from_settings(settings)
        except ValueError as exc:
            raise SystemExit(f"carealarm: notification settings: {exc}") from None
        notifier = Notifier(sessions=sessions, channels=channels)
        tasks.append(asyncio.create_task(notifier.run(stop), name="notifier"))
        monitor = Monitor(
            sessions=sessions,
            notify_alerts=lambda: hints.publish(HINT_ALERTS),
            notify_people=notifier.wake,
            channels=frozenset(channels),
            publish=hints.publish_command,
            timezone=settings.timezone,
            poll_interval_s=settings.poll_interval_s,
        )
        metrics_sources.append(monitor.metrics.render)
        hints.on(HINT_EVENTS, monitor.wake)
        tasks.append(asyncio.create_task(monitor.run(stop), name="monitor"))
        record_run("monitor", monitor.health_state)
        if "central" not in options.components:
            # Central cannot report its own death: the monitor's process watches it and pages once.
            central_watch = Watchdog(
                sessions=sessions,
                publish=lambda _message: None,
                channels=channels,
                page_after_s=settings.watchdog_page_after_s,
                expect=("central",),
                scope="central",
            )
            tasks.append(asyncio.create_task(central_watch.run(stop), name="central-watch"))
    if "central" in options.components:
        broadcaster = Broadcaster(sessions, poll_interval_s=settings.poll_interval_s)
        hints.on(HINT_ALERTS, broadcaster.wake)
        watchdog = _watchdog(settings, sessions, broadcaster, mqtt)
        metrics_sources.append(watchdog.render_metrics)
        ctx = CentralContext(
            sessions=sessions,
            broadcaster=broadcaster,
            # The console that acted sees its own change at once; other processes hear the hint.
            notify_alerts=_both(broadcaster.wake, lambda: hints.publish(HINT_ALERTS)),
            session_hours=settings.session_hours,
            secure_cookies=settings.env == "production",
            metrics_sources=metrics_sources,
            timezone=settings.timezone,
            watchdog=watchdog,
        )
        app = create_app(ctx)
        app.state.calls_config = CallsConfig(
            ice_servers=settings.ice_servers,
            public_url=settings.public_url or f"http://{settings.http_host}:{settings.http_port}",
            mqtt=mqtt,
        )
        # Device changes reach whichever broker the service uses, at once (its dynamic-security plugin).
        app.state.device_accounts = DynsecAccounts(mqtt)
        if supervisor is not None:  # /healthz, the console and the metrics read `.health` (a BrokerHealth)
            app.state.broker_supervisor = supervisor
        config = uvicorn.Config(
            app,
            host=settings.http_host,
            port=settings.http_port,
            log_level="warning",
            ws_ping_interval=20,
            ws_ping_timeout=20,
        )
        server = _Server(config)
        central_task = asyncio.create_task(server.serve(), name="central")
        tasks.append(central_task)
        record_run("central", broadcaster.health_state)
    hints.start()
    metrics_server = None
    if settings.metrics_port and "central" not in options.components:
        from .metrics_http import serve_metrics

        metrics_server = serve_metrics(settings.http_host, settings.metrics_port, metrics_sources)
    if options.simulate:
        from devices.simulator.fleet import load_fleet, run_fleet

        fleet = load_fleet(settings.data_dir / "fleet.json")
        device_broker = MqttConfig(mqtt.host, mqtt.port, tls=mqtt.tls)
        # Every device heartbeats, the tablets included (their video endpoint below is a second connection
        # of the same device that answers calls; the simulated one reports liveness and ignores rings).
        tasks.append(
            asyncio.create_task(
                _discard(run_fleet(fleet, device_broker, stop, alarm_every_s=options.alarm_every_s)),
                name="simulator",
            )
        )
        if "central" in options.components and any(c.kind == "video" for c in fleet):
            from devices.video.fleet import run_video_devices

            central_url = f"http://{settings.http_host}:{settings.http_port}"
            tasks.append(
                asyncio.create_task(
                    run_video_devices(fleet, device_broker, central_url, stop), name="video-devices"
                )
            )

    if server is not None:
        while not server.started and not central_task.done():
            await asyncio.sleep(0.05)
        if server.started:
            print(f"carealarm: console at http://{settings.http_host}:{settings.http_port}", flush=True)
    print(
        f"carealarm: running {', '.join(sorted(options.components))}"
        f"{' with the embedded broker on 127.0.0.1:' + str(mqtt.port) if broker else ''}"
        f"{' and a simulated fleet' if options.simulate else ''}; Ctrl+C stops",
        flush=True,
    )

    done_early = asyncio.create_task(_first_failure(tasks))
    stop_wait = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait({stop_wait, done_early}, return_when=asyncio.FIRST_COMPLETED)
    # A component that ends before we were asked to stop has failed; after the stop, ending is the point (a
    # signal during start-up may already have ended the tasks that stop on it, run records among them).
    failure = done_early.result() if done_early in done and not stop.is_set() else None
    done_early.cancel()
    stop.set()
    if supervisor is not None:  # also when a component failed: the broker is stopped below
        supervisor.stop_restarting()
    log.info("stopping")
    if server is not None:
        server.should_exit = True
    # Everything stops side by side: a paho client whose broker has gone takes up to 1 s to stop.
    closing = [asyncio.create_task(asyncio.to_thread(hints.stop), name="hints")]
    if gateway is not None:
        closing.append(asyncio.create_task(asyncio.to_thread(gateway.stop), name="gateway"))
    await _stop_within([*tasks, *closing], STOP_GRACE_S)
    if metrics_server is not None:
        metrics_server.shutdown()
    if supervisor is not None:
        supervisor.stop()
    if broker is not None:
        broker.stop()
    engine.dispose()
    if failure:
        raise SystemExit(f"carealarm: {failure}")


def _watchdog(
    settings: Settings, sessions: SessionFactory, broadcaster: Broadcaster, mqtt: MqttConfig
) -> Watchdog:
    """Central's watchdog with the end-to-end probe on the service's own MQTT account."""
    with sessions.begin() as session:
        ensure_probe_device(session, _now_ms())
    try:
        channels = channels_from_settings(settings)
    except ValueError as exc:
        raise SystemExit(f"carealarm: notification settings: {exc}") from None
    watchdog = Watchdog(
        sessions=sessions,
        publish=broadcaster.publish,
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
