"""Administration commands: provision, rotate and remove devices; clients and users; maintenance windows;
the broker's initial accounts.

``carealarm devices add`` and ``rotate`` print a device's password once (only its hash is kept); ``add``,
``rotate`` and ``remove`` then tell the broker over its dynamic-security plugin and wait for its answer, so
the change holds at once, on the embedded broker as on an external one (``carealarm.broker``). An embedded
broker that is not running loads every device from the database when it starts. ``carealarm broker-export
--dir DIR`` writes the plugin's file for a new external broker.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections.abc import Callable
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import TypeAlias
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from care.alert_store import resolve_device_alerts
from care.policy import PolicyError, merge_policy
from care.windows import WindowError, WindowInfo, WindowInvalid, create_window, end_window, list_windows
from messaging.accounts import (
    SERVICE_USER,
    BrokerAdminError,
    BrokerUnreachable,
    DynsecAccounts,
    dynsec_config,
    mosquitto_hash,
    service_password,
)
from messaging.mqtt import MqttConfig
from storage.db import SessionFactory, make_engine, make_session_factory, upgrade
from storage.models import Client, User
from storage.registry import (
    DEVICE_KINDS,
    RegistryError,
    add_client,
    add_device,
    broker_accounts,
    broker_logins,
    decommission_device,
    rotate_device_password,
)

from .clients_cli import add_client_edit, add_contact_commands, run_clients_cli
from .settings import Settings
from .users_cli import add_user_commands, run_users

__all__ = ["ADMIN_COMMANDS", "add_admin_commands", "run_admin"]

ADMIN_COMMANDS = frozenset({"clients", "contacts", "devices", "users", "broker-export", "policy", "windows"})
_DURATION = re.compile(r"(\d{1,6})([mhd])")
_UNIT_MS = {"m": 60_000, "h": 3_600_000, "d": 86_400_000}

_Commands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def add_admin_commands(sub: _Commands) -> None:
    """Add the administration commands (ADMIN_COMMANDS) to the ``carealarm`` command line."""
    for add in (
        _add_clients,
        add_contact_commands,
        _add_devices,
        _add_users,
        _add_policy,
        _add_windows,
        _add_broker_export,
    ):
        add(sub)


def _add_clients(sub: _Commands) -> None:
    """``clients add``."""
    clients = sub.add_parser(
        "clients", help="manage clients", description="Manage clients (people cared for)."
    )
    c_sub = clients.add_subparsers(dest="action", required=True, metavar="ACTION")
    c_add = c_sub.add_parser("add", help="register a client", description="Register a client; prints its id.")
    c_add.add_argument("--name", required=True)
    c_add.add_argument("--address", default="")
    c_add.add_argument("--district", default="")
    add_client_edit(c_sub)  # clients edit (carealarm.clients_cli)


def _add_devices(sub: _Commands) -> None:
    """``devices add``, ``rotate`` and ``remove``."""
    devices = sub.add_parser(
        "devices",
        help="provision, rotate and remove devices",
        description="Provision devices, give them new passwords, take them out of service. Each change "
        "holds at the broker as soon as the command returns (its dynamic-security plugin).",
    )
    d_sub = devices.add_subparsers(dest="action", required=True, metavar="ACTION")
    d_add = d_sub.add_parser(
        "add",
        help="provision a device with its own broker credentials",
        description="Provision a device: its id is its MQTT user name and the client id it must connect "
        "with; the password is printed once. The broker lets it in at once.",
    )
    d_add.add_argument("device_id")
    d_add.add_argument("--client", type=int, required=True, metavar="CLIENT_ID")
    d_add.add_argument("--kind", required=True, choices=DEVICE_KINDS)
    d_add.add_argument("--label", default="")
    d_rotate = d_sub.add_parser(
        "rotate",
        help="give devices new broker passwords (the old ones are refused at once)",
        description="Give each device a new broker password, printed once. The broker refuses the old "
        "password at once and disconnects a device connected with it.",
    )
    d_rotate.add_argument("device_ids", nargs="+", metavar="DEVICE_ID")
    d_rotate.add_argument(
        "--fleet",
        type=Path,
        metavar="FILE",
        help="write the new passwords into this simulator credentials file instead of printing them "
        "(e.g. var/fleet.json for the demo's simulated fleet)",
    )
    d_remove = d_sub.add_parser(
        "remove",
        help="decommission a device: the broker refuses it at once, its history is kept",
        description="Take a device out of service: the broker refuses it at once (and disconnects it if "
        "connected); its events and alerts are kept; no alert is raised about its silence. Its id is not "
        "given out again.",
    )
    d_remove.add_argument("device_id")


def _add_users(sub: _Commands) -> None:
    """``users add|deactivate|activate|reset-password`` (:mod:`carealarm.users_cli`)."""
    add_user_commands(sub)


def _add_policy(sub: _Commands) -> None:
    """``policy show`` and ``set``."""
    policy = sub.add_parser(
        "policy",
        help="show or change escalation policies",
        description="Show the effective escalation policy (of the organisation, or of one client), or set "
        "overrides as NAME=VALUE (seconds, counts, true/false). Each value is checked against its "
        "allowed range; docs/escalation.md lists them with their defaults and sources.",
    )
    p_sub = policy.add_subparsers(dest="action", required=True, metavar="ACTION")
    p_show = p_sub.add_parser("show", help="print the effective policy as JSON")
    p_show.add_argument("--client", type=int, default=None, metavar="CLIENT_ID")
    p_set = p_sub.add_parser("set", help="set overrides, e.g. dose_grace_s=3600")
    p_set.add_argument("--client", type=int, default=None, metavar="CLIENT_ID")
    p_set.add_argument("assignments", nargs="+", metavar="NAME=VALUE")


def _add_windows(sub: _Commands) -> None:
    """``windows add``, ``list`` and ``end``."""
    windows = sub.add_parser(
        "windows",
        help="maintenance windows: hold back a client's or device's routine alerts for a while",
        description="Maintenance windows (client in hospital, on holiday; a device being repaired): while "
        "one runs, device-state and dose alerts of its client or device are recorded instead of raised. "
        "An alarm always comes through. A window lasts at most 30 days. Times are the clients' local time "
        "(CAREALARM_TIMEZONE) unless they carry an offset.",
    )
    w_sub = windows.add_subparsers(dest="action", required=True, metavar="ACTION")
    w_add = w_sub.add_parser(
        "add",
        help="start or plan a window (prints its id)",
        description="Start a window now, or plan one with --from. Give the client or the device, the end "
        "(--until or --for) and the reason.",
    )
    target = w_add.add_mutually_exclusive_group(required=True)
    target.add_argument("--client", type=int, metavar="CLIENT_ID", help="the whole client")
    target.add_argument("--device", metavar="DEVICE_ID", help="one device")
    until = w_add.add_mutually_exclusive_group(required=True)
    until.add_argument("--until", metavar="WHEN", help="end, e.g. 2026-12-24T18:00")
    until.add_argument(
        "--for", dest="duration", metavar="DURATION", help="length from the start: 90m, 12h, 3d"
    )
    w_add.add_argument("--from", dest="starts", metavar="WHEN", help="start (default: now)")
    w_add.add_argument("--reason", required=True, help="why, e.g. 'in hospital'")
    w_add.add_argument("--by", metavar="USERNAME", help="the console user on whose behalf it is added")
    w_list = w_sub.add_parser("list", help="list windows (running and upcoming by default)")
    w_list.add_argument(
        "--which", choices=("current", "active", "upcoming", "past", "all"), default="current"
    )
    w_list.add_argument("--client", type=int, default=None, metavar="CLIENT_ID")
    w_end = w_sub.add_parser(
        "end", help="end a running window now (or cancel a planned one)", description="End a window early."
    )
    w_end.add_argument("window_id", type=int)
    w_end.add_argument("--by", metavar="USERNAME", help="the console user on whose behalf it is ended")


def _add_broker_export(sub: _Commands) -> None:
    """``broker-export --dir DIR``."""
    export = sub.add_parser(
        "broker-export",
        help="write the dynamic-security file for a new external Mosquitto",
        description="Write DIR/dynamic-security.json for Mosquitto's dynamic-security plugin: the service "
        "account (password from CAREALARM_MQTT_URL) as its admin, every device with its own role and client "
        "id. Install it before the broker's first start with the plugin; from then on carealarm changes the "
        "accounts at run time (docs/operations.md).",
    )
    export.add_argument("--dir", type=Path, required=True)


def run_admin(args: argparse.Namespace, settings: Settings) -> int:
    """Run one administration command; return the exit code."""
    url = settings.effective_database_url
    if settings.env == "development":
        upgrade(url)  # the embedded database may not exist yet
    engine = make_engine(url)
    sessions = make_session_factory(engine)
    now_ms = int(time.time() * 1000)
    try:
        if args.command == "devices":
            return _devices(args, settings, sessions, now_ms)
        with sessions.begin() as session:
            if args.command == "contacts" or (args.command == "clients" and args.action == "edit"):
                run_clients_cli(session, args, now_ms)
            elif args.command == "clients":
                client = add_client(
                    session, name=args.name, address=args.address, district=args.district, now_ms=now_ms
                )
                print(f"client {client.id}: {client.name}")
            elif args.command == "policy":
                _policy(session, args, now_ms)
            elif args.command == "windows":
                _windows(session, args, now_ms, ZoneInfo(settings.timezone))
            elif args.command == "users":
                run_users(session, args, now_ms)
            accounts = broker_accounts(session)
    except (RegistryError, PolicyError, WindowError) as exc:
        print(f"carealarm: {exc}", file=sys.stderr)
        return 1
    finally:
        engine.dispose()
    if args.command == "broker-export":
        if not settings.mqtt_url:
            print("carealarm: set CAREALARM_MQTT_URL (its password is the service user's)", file=sys.stderr)
            return 2
        service = MqttConfig.from_url(settings.mqtt_url)
        if service.username != SERVICE_USER:
            print(f"carealarm: the service's broker user must be {SERVICE_USER}", file=sys.stderr)
            return 2
        args.dir.mkdir(parents=True, exist_ok=True)
        path = args.dir / "dynamic-security.json"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(dynsec_config(mosquitto_hash(service.password or ""), accounts), fh, indent=1)
        print(
            f"wrote {path} ({len(accounts)} devices); install it as the plugin's config file before the "
            "broker's first start with the plugin (docs/operations.md)"
        )
    return 0


def _devices(args: argparse.Namespace, settings: Settings, sessions: SessionFactory, now_ms: int) -> int:
    """Provision, rotate or remove devices: the database first, then the broker, which is waited for."""
    broker = DynsecAccounts(_service_mqtt(settings))
    try:
        if args.action == "add":
            with sessions.begin() as session:
                device, password = add_device(
                    session,
                    device_id=args.device_id,
                    client_id=args.client,
                    kind=args.kind,
                    label=args.label,
                    now_ms=now_ms,
                )
                logins = broker_logins(device.id, device.kind)
            print(f"device {device.id} provisioned for client {device.client_id}; MQTT client id {device.id}")
            print(f"MQTT user name: {device.id}\nMQTT password:  {password}   (shown once; keep it safe)")
            for username, _ in logins[1:]:
                print(f"its video endpoint: MQTT user name and client id {username}, the same password")
            return _tell_broker(
                settings,
                lambda: broker.put_many([(name, password, client_id) for name, client_id in logins]),
                f"the broker lets {device.id} in now",
                f"once the broker answers, `carealarm devices rotate {device.id}` gives the device a "
                "password the broker knows too",
            )
        if args.action == "rotate":
            with sessions.begin() as session:
                rotated = []
                for device_id in dict.fromkeys(args.device_ids):
                    device, password = rotate_device_password(session, device_id=device_id)
                    client = session.get(Client, device.client_id)
                    rotated.append((device, password, client.name if client else ""))
            if args.fleet:
                _write_fleet(args.fleet, [(d.id, p, d.kind, name) for d, p, name in rotated])
                print(f"wrote the new passwords of {len(rotated)} devices to {args.fleet}")
            else:
                for device, password, _name in rotated:
                    print(f"{device.id}: new MQTT password {password}   (shown once; keep it safe)")
            code = 0
            for device, password, _name in rotated:
                code |= _tell_broker(
                    settings,
                    partial(_rotate, broker, broker_logins(device.id, device.kind), password),
                    f"the broker refuses the old password of {device.id} from now on",
                    f"the broker still takes the old password of {device.id}: rotate it again once the "
                    "broker answers",
                )
            return code
        with sessions.begin() as session:
            device, now = decommission_device(session, device_id=args.device_id, now_ms=now_ms)
            resolve_device_alerts(session, device.id, now_ms)
        print(
            f"device {device.id} {'decommissioned' if now else 'was decommissioned already'}; its events "
            "and alerts are kept"
        )
        return _tell_broker(
            settings,
            partial(_revoke, broker, broker_logins(device.id, device.kind)),
            f"the broker refuses {device.id} from now on (a connected one was disconnected)",
            f"the broker still lets {device.id} in: run `carealarm devices remove {device.id}` again once it "
            "answers",
        )
    except RegistryError as exc:
        print(f"carealarm: {exc}", file=sys.stderr)
        return 1


def _service_mqtt(settings: Settings) -> MqttConfig:
    """The services' broker account: CAREALARM_MQTT_URL's, or the embedded broker's."""
    if settings.mqtt_url:
        ca = str(settings.mqtt_ca_file) if settings.mqtt_ca_file else None
        return MqttConfig.from_url(settings.mqtt_url, ca_file=ca)
    return MqttConfig(
        "127.0.0.1", settings.embedded_mqtt_port, SERVICE_USER, service_password(settings.broker_dir)
    )


def _rotate(broker: DynsecAccounts, logins: list[tuple[str, str]], password: str) -> None:
    for username, client_id in logins:  # a video tablet has two logins, one password
        broker.set_password(username, password, client_id=client_id)


def _revoke(broker: DynsecAccounts, logins: list[tuple[str, str]]) -> None:
    for username, _client_id in logins:
        broker.revoke(username)


def _tell_broker(settings: Settings, change: Callable[[], None], done: str, otherwise: str) -> int:
    """Make the change at the broker; say what holds now. 3 when an external broker was not told."""
    try:
        change()
    except BrokerUnreachable as exc:
        if not settings.mqtt_url:
            print(
                f"the embedded broker is not running ({exc}); it loads every device from the database "
                "when it starts"
            )
            return 0
        print(f"carealarm: the broker was not told: {exc}; {otherwise}", file=sys.stderr)
        return 3
    except BrokerAdminError as exc:
        print(f"carealarm: the broker was not told: {exc}; {otherwise}", file=sys.stderr)
        return 3
    print(done)
    return 0


def _write_fleet(path: Path, rotated: list[tuple[str, str, str, str]]) -> None:
    """Put new passwords into a simulator credentials file, keeping its other devices."""
    from devices.simulator.device import Credentials
    from devices.simulator.fleet import load_fleet, save_fleet

    fleet = {c.device_id: c for c in (load_fleet(path) if path.exists() else [])}
    for device_id, password, kind, client_name in rotated:
        fleet[device_id] = Credentials(device_id, password, kind, client_name)
    save_fleet(path, sorted(fleet.values(), key=lambda c: c.device_id))


def _policy(session: Session, args: argparse.Namespace, now_ms: int) -> None:
    from dataclasses import asdict

    from sqlalchemy import select

    from care.alert_store import policy_for
    from storage.models import Policy as PolicyRow

    if args.action == "set":
        row = session.scalars(
            select(PolicyRow).where(
                PolicyRow.client_id.is_(None) if args.client is None else PolicyRow.client_id == args.client
            )
        ).first()
        current = json.loads(row.settings) if row else {}
        for assignment in args.assignments:
            name, _, raw = assignment.partition("=")
            try:
                current[name] = json.loads(raw)
            except json.JSONDecodeError:
                raise PolicyError(f"{assignment}: the value must be a number or true/false") from None
        merge_policy(json.dumps(current))  # checked: names and allowed ranges
        if row is None:
            session.add(PolicyRow(client_id=args.client, settings=json.dumps(current), updated_ms=now_ms))
        else:
            row.settings, row.updated_ms = json.dumps(current), now_ms
        session.flush()
    print(json.dumps(asdict(policy_for(session, args.client)), indent=1))


def _windows(session: Session, args: argparse.Namespace, now_ms: int, tz: ZoneInfo) -> None:
    if args.action == "list":
        for info in list_windows(session, now_ms=now_ms, which=args.which, client_id=args.client):
            print(_window_line(info, tz))
        return
    user_id = _user_id(session, args.by)
    if args.action == "end":
        info = end_window(session, window_id=args.window_id, user_id=user_id, now_ms=now_ms)
        print(f"ended {_window_line(info, tz)}")
        return
    starts = _when(args.starts, tz, "--from") if args.starts else None
    if args.until:
        ends = _when(args.until, tz, "--until")
    else:
        match = _DURATION.fullmatch(args.duration)
        if match is None:
            raise WindowInvalid(f"--for {args.duration}: give a number and m, h or d, e.g. 3d")
        ends = max(starts or now_ms, now_ms) + int(match[1]) * _UNIT_MS[match[2]]
    info = create_window(
        session,
        client_id=args.client,
        device_id=args.device,
        starts_ms=starts,
        ends_ms=ends,
        reason=args.reason,
        user_id=user_id,
        now_ms=now_ms,
    )
    print(f"added {_window_line(info, tz)}")


def _when(text: str, tz: ZoneInfo, option: str) -> int:
    """A date and time as typed: ISO 8601, in the clients' time zone unless it carries an offset."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise WindowInvalid(f"{option} {text}: give a date and time like 2026-12-24T18:00") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=tz)
    return int(moment.timestamp() * 1000)


def _user_id(session: Session, username: str | None) -> int | None:
    if username is None:
        return None
    user_id = session.scalar(select(User.id).where(User.username == username))
    if user_id is None:
        raise WindowInvalid(f"--by {username}: no such user")
    return user_id


def _window_line(info: WindowInfo, tz: ZoneInfo) -> str:
    def at(ms: int) -> str:
        return datetime.fromtimestamp(ms / 1000, tz).strftime("%Y-%m-%d %H:%M")

    what = f"device {info.device_id} of " if info.device_id else ""
    return (
        f"window {info.id} [{info.state}] {what}client {info.client_id} ({info.client_name}): "
        f"{at(info.starts_ms)} to {at(info.ends_ms)}, {info.reason}; {info.suppressed} alerts held back"
    )
