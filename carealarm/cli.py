"""The ``carealarm`` command line: run the service, its components one by one, and its set-up tasks."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias

from pydantic import ValidationError

from messaging.mqtt import MqttConfig

from .admin import ADMIN_COMMANDS, add_admin_commands, run_admin
from .settings import Settings

if TYPE_CHECKING:
    from devices.simulator.device import Credentials
    from devices.simulator.scenarios import Scenario

__all__ = ["main"]

_Commands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"

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
    _add_service_commands(sub)
    _add_simulate_command(sub)
    add_admin_commands(sub)
    _add_db_command(sub)
    return p


# The components that also run on their own (``carealarm gateway`` ...), each with its help line.
_COMPONENT_COMMANDS = (
    ("gateway", "run only the MQTT gateway (device messages in, stored, acknowledged)"),
    ("monitor", "run only the monitor (device events become alerts)"),
    ("central", "run only the care-station API and console"),
)


def _add_service_commands(sub: _Commands) -> None:
    """``run`` (everything in one process), one command per component, and ``broker``."""
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
    for name, text in _COMPONENT_COMMANDS:
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


# ``carealarm simulate``'s optional numbers: (flag, metavar, help); each defaults to None (the scenario's).
_SIMULATE_FLOATS = (
    ("--duration", "SECONDS", "stop after this long (default: never)"),
    ("--alarm-every", "SECONDS", "mean time between alarms across the fleet (default: the scenario's)"),
    ("--heartbeat", "SECONDS", "heartbeat interval of every device (default: the scenario's, 30)"),
    (
        "--compress",
        "FACTOR",
        "care-day: seconds of the simulated day per second of the run (default 240: the day "
        "07:00-23:00 takes four minutes)",
    ),
)


def _add_simulate_command(sub: _Commands) -> None:
    """``simulate``: the simulated fleet, following a scenario."""
    sim = sub.add_parser(
        "simulate",
        help="run the simulated fleet against a running service",
        description="Connect the simulated devices listed in <data dir>/fleet.json (written by "
        "`carealarm run --demo`, or by `python -m bench provision`) and let them behave like real ones, "
        "following a named scenario; the same scenario and seed give the same run.",
    )
    sim.add_argument(
        "--scenario",
        default="demo",
        help="demo (default), realistic, heartbeats, storm (see devices/simulator/scenarios.py), or "
        "care-day: a compressed day with every case the console must handle, after which the devices "
        "stay online until stopped (devices/simulator/careday.py)",
    )
    sim.add_argument("--devices", type=int, default=None, metavar="N", help="use the first N devices only")
    sim.add_argument("--seed", type=int, default=1, help="random seed, so a run is repeatable")
    for flag, metavar, text in _SIMULATE_FLOATS:
        sim.add_argument(flag, type=float, default=None, metavar=metavar, help=text)
    sim.add_argument("--fleet", type=Path, default=None, metavar="FILE", help="credentials file to use")
    sim.add_argument("--quiet", action="store_true", help="no progress display")


def _add_db_command(sub: _Commands) -> None:
    """``db upgrade``."""
    db = sub.add_parser("db", help="database tasks", description="Database tasks.")
    db_sub = db.add_subparsers(dest="db_command", required=True, metavar="TASK")
    db_sub.add_parser(
        "upgrade",
        help="apply the Alembic migrations up to the newest schema",
        description="Apply the Alembic migrations to CAREALARM_DATABASE_URL (or the embedded SQLite).",
    )


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
        print(f"carealarm: configuration error:\n{_problems(exc)}", file=sys.stderr)
        return 2

    if args.command == "db":
        from storage.db import upgrade

        upgrade(settings.effective_database_url)
        print("carealarm: database schema is up to date")
        return 0
    if args.command in ADMIN_COMMANDS:
        return run_admin(args, settings)
    if args.command == "broker":
        return _broker(settings)
    if args.command == "simulate":
        return _simulate(settings, args)

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


def _problems(exc: ValidationError) -> str:
    """Each setting's problem by name and message, never the values given (they may be secrets)."""
    lines = []
    for error in exc.errors(include_input=False, include_url=False, include_context=False):
        where = ".".join(str(part) for part in error["loc"])
        name = f"{where} (CAREALARM_{where.split('.')[0].upper()})" if where else "settings"
        lines.append(f"  {name}: {error['msg']}")
    return "\n".join(lines)


def _broker(settings: Settings) -> int:
    import signal
    import threading

    from messaging.accounts import BrokerError
    from storage.db import make_engine, make_session_factory, upgrade
    from storage.registry import device_password_hashes

    from .broker import EmbeddedBroker
    from .supervise import BrokerChild, Supervisor

    upgrade(settings.effective_database_url)

    broker = EmbeddedBroker(settings.broker_dir, settings.embedded_mqtt_port)

    def start_broker() -> None:
        """Start Mosquitto with the credentials of every device registered by now (again at each restart)."""
        engine = make_engine(settings.effective_database_url)
        try:
            with make_session_factory(engine)() as session:
                hashes = device_password_hashes(session)
        finally:
            engine.dispose()
        broker.start(hashes)

    try:
        start_broker()
    except BrokerError as exc:
        print(f"carealarm: {exc}", file=sys.stderr)
        return 1
    supervisor = Supervisor(BrokerChild(broker, restart=start_broker))
    stopping = threading.Event()

    def on_signal(_signum: int, _frame: object) -> None:
        # A broker that ends from now on stays down: a terminal's Ctrl+C reaches Mosquitto too.
        supervisor.stop_restarting()
        stopping.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)
    supervisor.start()
    print(f"carealarm: embedded broker on 127.0.0.1:{settings.embedded_mqtt_port}; Ctrl+C stops", flush=True)
    try:
        stopping.wait()
    finally:
        supervisor.stop()
        broker.stop()
    return 0


def _simulate(settings: Settings, args: argparse.Namespace) -> int:
    from devices.simulator.fleet import resolve_scenario

    fleet_file = args.fleet or settings.data_dir / "fleet.json"
    if not fleet_file.exists():
        print(
            f"carealarm: {fleet_file} not found; run `carealarm run --demo` once to provision the demo fleet",
            file=sys.stderr,
        )
        return 1
    try:
        scenario = resolve_scenario(
            args.scenario,
            alarm_every_s=args.alarm_every,
            heartbeat_s=args.heartbeat,
            compression=args.compress,
        )
    except (KeyError, ValueError) as exc:
        print(f"carealarm: {exc.args[0]}", file=sys.stderr)
        return 2
    creds = _simulated_devices(fleet_file, scenario, args)
    if creds is None:
        return 2
    asyncio.run(_run_simulation(creds, _device_broker(settings), scenario, args))
    return 0


def _simulated_devices(
    fleet_file: Path, scenario: Scenario, args: argparse.Namespace
) -> list[Credentials] | None:
    """The fleet's devices the run uses (``--devices``), or None (said why) when the file cannot serve."""
    from devices.simulator.fleet import load_fleet, plan_actions

    creds = load_fleet(fleet_file)
    if args.devices is not None:
        if args.devices > len(creds):
            print(
                f"carealarm: {fleet_file} holds {len(creds)} devices, fewer than --devices {args.devices}",
                file=sys.stderr,
            )
            return None
        creds = creds[: args.devices]
    if scenario.script is not None:
        try:  # a scripted scenario needs certain devices (care-day: e.g. a client with a button and a tablet)
            plan_actions(scenario, creds, args.seed)
        except ValueError as exc:
            print(f"carealarm: {fleet_file}: {exc}", file=sys.stderr)
            return None
    return creds


def _device_broker(settings: Settings) -> MqttConfig:
    """Where the simulated devices connect: the service's broker, without the service's account."""
    if settings.mqtt_url:
        cfg = MqttConfig.from_url(settings.mqtt_url)
        return MqttConfig(cfg.host, cfg.port, tls=cfg.tls)
    return MqttConfig("127.0.0.1", settings.embedded_mqtt_port)


def _progress_printer(quiet: bool, tty: bool) -> Callable[[object, float], None]:
    """Show the fleet's progress on standard error (nothing with ``quiet``)."""
    from devices.simulator.fleet import format_progress

    shown = [0.0]

    def progress(stats: object, elapsed_s: float) -> None:
        # On a terminal one line is redrawn every second; in a log, one line every ten seconds.
        if quiet or (not tty and elapsed_s - shown[0] < 10):
            return
        shown[0] = elapsed_s
        line = format_progress(stats, elapsed_s)  # type: ignore[arg-type]
        print(("\r" + line + "\x1b[K") if tty else line, end="" if tty else "\n", file=sys.stderr, flush=True)

    return progress


async def _run_simulation(
    creds: list[Credentials], broker: MqttConfig, scenario: Scenario, args: argparse.Namespace
) -> None:
    """Run the fleet until ``--duration`` ends or a signal comes, then print what it did."""
    import signal

    from devices.simulator.fleet import run_fleet

    # A scripted scenario logs a line per case: a redrawn progress line would run into them.
    tty = sys.stderr.isatty() and scenario.script is None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    stats = await run_fleet(
        creds,
        broker,
        stop,
        seed=args.seed,
        scenario=scenario,
        duration_s=args.duration,
        progress=_progress_printer(args.quiet, tty),
    )
    if tty and not args.quiet:
        print(file=sys.stderr)
    print(
        f"carealarm: scenario {scenario.name} (seed {args.seed}): {stats.alarms} alarms "
        f"({stats.cancels} cancelled), {stats.doses} doses, {stats.faults} faults, "
        f"{stats.commands} commands answered, {stats.heartbeats} heartbeats, "
        f"{stats.acked} events acknowledged, {stats.resent} resent"
    )


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
