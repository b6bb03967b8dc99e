"""The registry: clients, devices with their broker credentials, and console users.

A device is never deleted: decommissioning marks it (``decommissioned_ms``) and clears its password hash, so
its events and alerts stay with it while the broker refuses it. Its id is not given out again.
"""

from __future__ import annotations

import re
import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from messaging.accounts import SERVICE_USER, DeviceAccount, mosquitto_hash, video_login

from .models import Client, Device, User

__all__ = [
    "DEVICE_KINDS",
    "RegistryError",
    "add_client",
    "add_device",
    "add_user",
    "broker_accounts",
    "broker_client_id",
    "broker_logins",
    "decommission_device",
    "device_password_hashes",
    "rotate_device_password",
]

DEVICE_KINDS = ("alarm_button", "dispenser", "video")
# No '/' in an id: a video tablet's second broker login is ``{id}/video`` (messaging.accounts.video_login),
# which therefore can never be another device's id.
_DEVICE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")


class RegistryError(ValueError):
    """A registry change that is not allowed (duplicate id, bad kind, ...)."""


def add_client(session: Session, *, name: str, address: str = "", district: str = "", now_ms: int) -> Client:
    client = Client(name=name, address=address, district=district, created_ms=now_ms)
    session.add(client)
    session.flush()
    return client


def add_device(
    session: Session,
    *,
    device_id: str,
    client_id: int,
    kind: str,
    label: str = "",
    now_ms: int,
    password: str | None = None,
) -> tuple[Device, str]:
    """Provision a device; return it with its broker password (shown once, only its hash is kept)."""
    if not _DEVICE_ID.fullmatch(device_id):
        raise RegistryError(
            "device id must be 1-64 characters of A-Z a-z 0-9 _ . : - (and start alphanumeric)"
        )
    if device_id.lower().startswith(SERVICE_USER):
        # The id is the device's MQTT user name and client id: the service's own connections are
        # carealarm-…, and a device must never share a name with one of them.
        raise RegistryError(f"device ids starting with '{SERVICE_USER}' are reserved for the service")
    if kind not in DEVICE_KINDS:
        raise RegistryError(f"device kind must be one of {', '.join(DEVICE_KINDS)}")
    existing = session.get(Device, device_id)
    if existing is not None:
        gone = " (decommissioned; an id is not given out again)" if existing.decommissioned_ms else ""
        raise RegistryError(f"device {device_id} exists already{gone}")
    if session.get(Client, client_id) is None:
        raise RegistryError(f"no client {client_id}")
    password = password or _new_password()
    device = Device(
        id=device_id,
        client_id=client_id,
        kind=kind,
        label=label,
        mqtt_password_hash=mosquitto_hash(password),
        created_ms=now_ms,
    )
    session.add(device)
    session.flush()
    return device, password


def rotate_device_password(
    session: Session, *, device_id: str, password: str | None = None
) -> tuple[Device, str]:
    """Give a device a new broker password; return it with the password (shown once)."""
    device = _live_device(session, device_id)
    password = password or _new_password()
    device.mqtt_password_hash = mosquitto_hash(password)
    session.flush()
    return device, password


def decommission_device(session: Session, *, device_id: str, now_ms: int) -> tuple[Device, bool]:
    """Mark a device decommissioned (its history stays); return it and whether it was decommissioned now.

    Decommissioning twice changes nothing here; the caller tells the broker again all the same.
    """
    device = session.get(Device, device_id)
    if device is None:
        raise RegistryError(f"no device {device_id}")
    if device.decommissioned_ms is not None:
        return device, False
    device.decommissioned_ms = now_ms
    device.mqtt_password_hash = ""
    session.flush()
    return device, True


def broker_client_id(device_id: str, kind: str) -> str:
    """The one MQTT client id the broker lets the device's own login use: its id, so no device can take
    another's session (nor a service connection's)."""
    del kind  # every kind alike; a video tablet's endpoint has a login of its own (broker_logins)
    return device_id


def broker_logins(device_id: str, kind: str) -> list[tuple[str, str]]:
    """Every (user name, client id) the device connects to the broker as, all with its one password.

    Each login is tied to its user name as client id: one session per login, and no login can take over
    another's. A video tablet has a second one for its video endpoint (devices/video/runtime.py).
    """
    logins = [(device_id, broker_client_id(device_id, kind))]
    if kind == "video":
        logins.append((video_login(device_id), video_login(device_id)))
    return logins


def broker_accounts(session: Session) -> list[DeviceAccount]:
    """Every device as the broker must know it: enabled with its hash and client id, or refused when
    decommissioned. Devices without a password (the service's own probe device) have no account."""
    accounts = []
    for device_id, kind, pw_hash, decommissioned_ms in session.execute(
        select(Device.id, Device.kind, Device.mqtt_password_hash, Device.decommissioned_ms).order_by(
            Device.id
        )
    ):
        if decommissioned_ms is not None:
            accounts.append(
                DeviceAccount(device_id, disabled=True, logins=tuple(broker_logins(device_id, kind)))
            )
        elif pw_hash:
            logins = tuple(broker_logins(device_id, kind))
            accounts.append(DeviceAccount(device_id, pw_hash, device_id, logins=logins))
    return accounts


# The name `carealarm broker` (cli.py) and the benchmarks still use.
device_password_hashes = broker_accounts


def add_user(
    session: Session,
    *,
    username: str,
    display_name: str,
    role: str,
    password_hash: str,
    district: str = "",
    now_ms: int,
) -> User:
    if session.scalars(select(User).where(User.username == username)).first() is not None:
        raise RegistryError(f"user {username} exists already")
    user = User(
        username=username,
        display_name=display_name,
        role=role,
        password_hash=password_hash,
        district=district,
        created_ms=now_ms,
    )
    session.add(user)
    session.flush()
    return user


def _live_device(session: Session, device_id: str) -> Device:
    device = session.get(Device, device_id)
    if device is None:
        raise RegistryError(f"no device {device_id}")
    if device.decommissioned_ms is not None:
        raise RegistryError(f"device {device_id} is decommissioned")
    return device


def _new_password() -> str:
    return secrets.token_urlsafe(18)
