"""The registry: clients, devices with their broker credentials, and console users."""

from __future__ import annotations

import re
import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from carealarm.broker import mosquitto_hash

from .models import Client, Device, User

__all__ = ["DEVICE_KINDS", "RegistryError", "add_client", "add_device", "add_user", "device_password_hashes"]

DEVICE_KINDS = ("alarm_button", "dispenser", "video")
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
    if kind not in DEVICE_KINDS:
        raise RegistryError(f"device kind must be one of {', '.join(DEVICE_KINDS)}")
    if session.get(Device, device_id) is not None:
        raise RegistryError(f"device {device_id} exists already")
    if session.get(Client, client_id) is None:
        raise RegistryError(f"no client {client_id}")
    password = password or secrets.token_urlsafe(18)
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


def device_password_hashes(session: Session) -> list[tuple[str, str]]:
    """Every device's (id, broker password hash), for the broker's password file."""
    return [(d, h) for d, h in session.execute(select(Device.id, Device.mqtt_password_hash)) if h]
