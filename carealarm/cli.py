"""The ``carealarm`` command line: run the service, its components one by one, and its set-up tasks."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import time

from pydantic import ValidationError

from .settings import Settings

__all__ = ["main"]

_EPILOG = """configuration comes from the environment (see README.md):
  CAREALARM_DATABASE_URL   e.g. postgresql://carealarm@db/carealarm (default: SQLite in CAREALARM_DATA_DIR)
  CAREALARM_MQTT_URL       e.g. mqtt://carealarm:secret@broker:1883 (default: the embedded Mosquitto)
  CAREALARM_DATA_DIR       where embedded data lives (default: ./var)
  CAREALARM_HTTP_HOST/PORT console address (default: 127.0.0.1:8000)
  CAREALARM_ENV            development (default) or production"""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="carealarm",
        description="Remote care alarm and medication-dispenser monitoring for home-care organisations.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser(
        "run",
        help="run every component in one process (embedded broker and SQLite by default)",
        description="Run the gateway, the monitor and the console together. Without "
        "CAREALARM_MQTT_URL an embedded Mosquitto is started as a child process.",
    )
    run.add_argument(
        "--demo", action="store_true", help="seed demo clients, devices and users if the database is empty"
    )
    run.add_argument(
        "--simulate", action="store_true", help="also run the simulated fleet (needs --demo once)"
    )
    run.add_argument(
        "--alarm-every",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="mean time between simulated alarms across the fleet (default 60)",
    )

    for name, text in (
        ("gateway", "run only the MQTT gateway (device messages in, stored, acknowledged)"),
        ("monitor", "run only the monitor (device events become alerts)"),
        ("central", "run only the care-station API and console"),
    ):
        sub.add_parser(
            name,
            help=text,
            description=text.capitalize() + ". Joins CAREALARM_MQTT_URL, or the "
            "embedded broker of a running `carealarm run`/`carealarm broker` with the same data dir.",
        )

    sub.add_parser(
        "broker",
        help="run only the embedded Mosquitto broker, in the foreground",
        description="Start the embedded Mosquitto with the configuration carealarm writes "
        "(auth, ACLs, persistence), for running components one by one.",
    )

    sim = sub.add_parser(
        "simulate",
        help="run the simulated fleet against a running service",
        description="Connect the simulated devices listed in <data dir>/fleet.json "
        "(written by `carealarm run --demo`) and let them behave like real ones.",
    )
    sim.add_argument("--alarm-every", type=float, default=60.0, metavar="SECONDS")
    sim.add_argument("--seed", type=int, default=1, help="random seed, so a run is repeatable")

    db = sub.add_parser("db", help="database tasks", description="Database tasks.")
    db_sub = db.add_subparsers(dest="db_command", required=True, metavar="TASK")
    db_sub.add_parser(
        "upgrade",
        help="apply the Alembic migrations up to the newest schema",
        description="Apply the Alembic migrations to CAREALARM_DATABASE_URL (or the embedded SQLite).",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )
    # Our own INFO is useful; libraries' INFO (HTTP access lines, SQL) is noise in a care-station log.
    for noisy in ("uvicorn.access", "sqlalchemy", "alembic", "aioice", "aiortc"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        settings = Settings()
    except ValidationError as exc:
        print(f"carealarm: configuration error:\n{exc}", file=sys.stderr)
        return 2

    if args.command == "db":
        from storage.db import upgrade

        upgrade(settings.effective_database_url)
        print("carealarm: database schema is up to date")
        return 0
    if args.command == "broker":
        return _broker(settings)
    if args.command == "simulate":
        return _simulate(settings, args.alarm_every, args.seed)

    from .runner import ALL_COMPONENTS, RunOptions, run

    if args.command == "run":
        options = RunOptions(
            components=ALL_COMPONENTS,
            embedded_broker=True,
            migrate=True,
            demo=args.demo,
            simulate=args.simulate,
            alarm_every_s=args.alarm_every,
        )
    else:
        options = RunOptions(components=frozenset({args.command}))
    asyncio.run(run(settings, options))
    return 0


def _broker(settings: Settings) -> int:
    import signal

    from storage.db import make_engine, make_session_factory, upgrade
    from storage.registry import device_password_hashes

    from .broker import BrokerError, EmbeddedBroker

    upgrade(settings.effective_database_url)
    engine = make_engine(settings.effective_database_url)
    with make_session_factory(engine)() as session:
        hashes = device_password_hashes(session)
    engine.dispose()
    broker = EmbeddedBroker(settings.broker_dir, settings.embedded_mqtt_port)
    try:
        broker.start(hashes)
    except BrokerError as exc:
        print(f"carealarm: {exc}", file=sys.stderr)
        return 1
    print(f"carealarm: embedded broker on 127.0.0.1:{settings.embedded_mqtt_port}; Ctrl+C stops", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        while broker.process is not None and broker.process.poll() is None:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        broker.stop()
    return 0


def _simulate(settings: Settings, alarm_every_s: float, seed: int) -> int:
    from devices.simulator.fleet import load_fleet, run_fleet

    from .mqtt import MqttConfig

    fleet_file = settings.data_dir / "fleet.json"
    if not fleet_file.exists():
        print(
            f"carealarm: {fleet_file} not found; run `carealarm run --demo` once to provision the demo fleet",
            file=sys.stderr,
        )
        return 1
    if settings.mqtt_url:
        cfg = MqttConfig.from_url(settings.mqtt_url)
        broker = MqttConfig(cfg.host, cfg.port, tls=cfg.tls)
    else:
        broker = MqttConfig("127.0.0.1", settings.embedded_mqtt_port)

    async def go() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        import signal

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        stats = await run_fleet(load_fleet(fleet_file), broker, stop, seed=seed, alarm_every_s=alarm_every_s)
        print(
            f"carealarm: simulated {stats.alarms} alarms ({stats.acked} acknowledged events), "
            f"{stats.doses} doses, {stats.heartbeats} heartbeats"
        )

    asyncio.run(go())
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
