"""Administration commands: provision clients, devices and users; export the broker's auth files.

``carealarm devices add`` prints the device's password once (only its hash is kept) and updates the broker:
the embedded one is told to re-read its files at once; for an external Mosquitto, ``carealarm broker-export
--dir DIR`` writes the password and ACL files to install there.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
import time
from pathlib import Path

from sqlalchemy.orm import Session

from monitor.policy import PolicyError, merge_policy
from storage.db import make_engine, make_session_factory, upgrade
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

ADMIN_COMMANDS = frozenset({"clients", "devices", "users", "broker-export", "policy"})
_ROLES = ("care_nurse", "district_nurse", "supervisor", "admin")


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
    except (RegistryError, PolicyError) as exc:
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
