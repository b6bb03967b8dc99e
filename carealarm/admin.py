"""Administration commands: provision clients, devices and users; maintenance windows; export the broker's
auth files.

``carealarm devices add`` prints the device's password once (only its hash is kept) and updates the broker:
the embedded one is told to re-read its files at once; for an external Mosquitto, ``carealarm broker-export
--dir DIR`` writes the password and ACL files to install there.
"""

from __future__ import annotations

import argparse
import getpass
import json
import re
import sys
import time
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from monitor.policy import PolicyError, merge_policy
from monitor.windows import WindowError, WindowInfo, WindowInvalid, create_window, end_window, list_windows
from storage.db import make_engine, make_session_factory, upgrade
from storage.models import User
from storage.registry import (
    DEVICE_KINDS,
    RegistryError,
    add_client,
    add_device,
    add_user,
    device_password_hashes,
)

from .broker import mosquitto_hash, reload_running, write_auth_files
from .mqtt import MqttConfig
from .settings import Settings

__all__ = ["ADMIN_COMMANDS", "add_admin_commands", "run_admin"]

ADMIN_COMMANDS = frozenset({"clients", "devices", "users", "broker-export", "policy", "windows"})
_ROLES = ("care_nurse", "district_nurse", "supervisor", "admin")
_DURATION = re.compile(r"(\d{1,6})([mhd])")
_UNIT_MS = {"m": 60_000, "h": 3_600_000, "d": 86_400_000}


def add_admin_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    clients = sub.add_parser(
        "clients", help="manage clients", description="Manage clients (people cared for)."
    )
    c_sub = clients.add_subparsers(dest="action", required=True, metavar="ACTION")
    c_add = c_sub.add_parser("add", help="register a client", description="Register a client; prints its id.")
    c_add.add_argument("--name", required=True)
    c_add.add_argument("--address", default="")
    c_add.add_argument("--district", default="")

    devices = sub.add_parser("devices", help="provision devices", description="Provision devices.")
    d_sub = devices.add_subparsers(dest="action", required=True, metavar="ACTION")
    d_add = d_sub.add_parser(
        "add",
        help="provision a device with its own broker credentials",
        description="Provision a device: its id is its MQTT user name; the password is printed once. The "
        "embedded broker (if running) re-reads its password file at once.",
    )
    d_add.add_argument("device_id")
    d_add.add_argument("--client", type=int, required=True, metavar="CLIENT_ID")
    d_add.add_argument("--kind", required=True, choices=DEVICE_KINDS)
    d_add.add_argument("--label", default="")

    users = sub.add_parser("users", help="manage console users", description="Manage console users.")
    u_sub = users.add_subparsers(dest="action", required=True, metavar="ACTION")
    u_add = u_sub.add_parser(
        "add",
        help="add a console user (password asked, or read from stdin)",
        description="Add a console user. The password is asked twice, or read from "
        "standard input with --password-stdin.",
    )
    u_add.add_argument("username")
    u_add.add_argument("--name", required=True, help="display name")
    u_add.add_argument("--role", required=True, choices=_ROLES)
    u_add.add_argument("--district", default="", help="the district nurse's district or team")
    u_add.add_argument("--email", default=None)
    u_add.add_argument("--password-stdin", action="store_true")

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

    export = sub.add_parser(
        "broker-export",
        help="write Mosquitto password and ACL files for an external broker",
        description="Write passwd and acl for a production Mosquitto: the service user (password from "
        "CAREALARM_MQTT_URL) and every provisioned device. Install them and SIGHUP the broker.",
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
        with sessions.begin() as session:
            if args.command == "clients":
                client = add_client(
                    session, name=args.name, address=args.address, district=args.district, now_ms=now_ms
                )
                print(f"client {client.id}: {client.name}")
            elif args.command == "devices":
                device, password = add_device(
                    session,
                    device_id=args.device_id,
                    client_id=args.client,
                    kind=args.kind,
                    label=args.label,
                    now_ms=now_ms,
                )
                print(f"device {device.id} provisioned for client {device.client_id}")
                print(f"MQTT user name: {device.id}\nMQTT password:  {password}   (shown once; keep it safe)")
            elif args.command == "policy":
                _policy(session, args, now_ms)
            elif args.command == "windows":
                _windows(session, args, now_ms, ZoneInfo(settings.timezone))
            elif args.command == "users":
                password = _read_password(args.password_stdin)
                from central.auth import hash_password

                user = add_user(
                    session,
                    username=args.username,
                    display_name=args.name,
                    role=args.role,
                    password_hash=hash_password(password),
                    district=args.district,
                    now_ms=now_ms,
                )
                user.email = args.email
                print(f"user {user.username} ({user.role}) added")
            hashes = device_password_hashes(session)
    except (RegistryError, PolicyError, WindowError) as exc:
        print(f"carealarm: {exc}", file=sys.stderr)
        return 1
    finally:
        engine.dispose()
    if args.command == "devices":
        _update_broker(settings, hashes)
    if args.command == "broker-export":
        if not settings.mqtt_url:
            print("carealarm: set CAREALARM_MQTT_URL (its password is the service user's)", file=sys.stderr)
            return 2
        service = MqttConfig.from_url(settings.mqtt_url)
        write_auth_files(args.dir, mosquitto_hash(service.password or ""), hashes)
        print(
            f"wrote {args.dir / 'passwd'} ({len(hashes)} devices) and {args.dir / 'acl'}; "
            "install them and send the broker SIGHUP"
        )
    return 0


def _policy(session: Session, args: argparse.Namespace, now_ms: int) -> None:
    from dataclasses import asdict

    from sqlalchemy import select

    from monitor.store import policy_for
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


def _update_broker(settings: Settings, hashes: list[tuple[str, str]]) -> None:
    if settings.mqtt_url:
        print("external broker: run `carealarm broker-export --dir DIR`, install the files, SIGHUP Mosquitto")
    elif reload_running(settings.broker_dir, hashes):
        print("the embedded broker re-read its password file; the device can connect now")
    else:
        print("the embedded broker is not running; it will know the device at its next start")


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass("password: ")
        if getpass.getpass("again: ") != password:
            raise RegistryError("the passwords differ")
    if len(password) < 10:
        raise RegistryError("a console password needs at least 10 characters")
    return password
