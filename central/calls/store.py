"""Database side of calls: the ``calls`` rows, recorded consent, and the lookups signalling needs."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from storage.calls_models import CallRecord, VideoConsent
from storage.models import Client, Device, User

from .state import Call

__all__ = [
    "Callee",
    "Consent",
    "callee_for_client",
    "callee_for_device",
    "consent_for",
    "record_consent",
    "save_call",
    "timeline",
    "verify_device_password",
]

# The device kind that carries video (tablet / TV box), see storage.registry.DEVICE_KINDS.
VIDEO_DEVICE_KIND = "video"


@dataclass(frozen=True, slots=True)
class Consent:
    monitoring_allowed: bool = False
    auto_answer: bool = False
    recorded_by: int | None = None
    recorded_ms: int | None = None


@dataclass(frozen=True, slots=True)
class Callee:
    client_id: int
    client_name: str
    device_id: str
    consent: Consent


def consent_for(session: Session, client_id: int) -> Consent:
    row = session.get(VideoConsent, client_id)
    if row is None:
        return Consent()
    return Consent(row.monitoring_allowed, row.auto_answer, row.recorded_by, row.recorded_ms)


def record_consent(
    session: Session,
    *,
    client_id: int,
    monitoring_allowed: bool,
    auto_answer: bool,
    user_id: int,
    now_ms: int,
) -> Consent:
    row = session.get(VideoConsent, client_id)
    if row is None:
        row = VideoConsent(client_id=client_id)
        session.add(row)
    row.monitoring_allowed = monitoring_allowed
    row.auto_answer = auto_answer
    row.recorded_by = user_id
    row.recorded_ms = now_ms
    session.flush()
    return Consent(monitoring_allowed, auto_answer, user_id, now_ms)


def callee_for_client(session: Session, client_id: int) -> Callee | None:
    """The client's video device (the first one provisioned), or None when it has none."""
    row = session.execute(
        select(Client.name, Device.id)
        .join(Device, Device.client_id == Client.id)
        .where(Client.id == client_id, Device.kind == VIDEO_DEVICE_KIND, Device.decommissioned_ms.is_(None))
        .order_by(Device.created_ms, Device.id)
    ).first()
    if row is None:
        return None
    return Callee(client_id, row[0], row[1], consent_for(session, client_id))


def callee_for_device(session: Session, device_id: str) -> Callee | None:
    row = session.execute(
        select(Client.id, Client.name)
        .join(Device, Device.client_id == Client.id)
        .where(Device.id == device_id, Device.kind == VIDEO_DEVICE_KIND)
    ).first()
    if row is None:
        return None
    return Callee(row[0], row[1], device_id, consent_for(session, row[0]))


def verify_device_password(session: Session, device_id: str, password: str) -> bool:
    """Check a device's broker password against its stored Mosquitto hash (``$7$iter$salt$digest``)."""
    stored = session.scalar(select(Device.mqtt_password_hash).where(Device.id == device_id))
    if not stored:
        return False
    try:
        _, seven, iterations, salt, digest = stored.split("$")
        if seven != "7":
            return False
        actual = hashlib.pbkdf2_hmac("sha512", password.encode(), base64.b64decode(salt), int(iterations), 64)
        return hmac.compare_digest(actual, base64.b64decode(digest))
    except ValueError:
        return False


def save_call(
    session: Session,
    call: Call,
    *,
    client_id: int,
    device_id: str,
    nurse_user_id: int | None,
    quality: dict[str, Any] | None,
) -> None:
    """Insert or update the call's row (the signalling server keeps the live state; this is the record)."""
    row = session.get(CallRecord, call.id)
    if row is None:
        row = CallRecord(id=call.id, client_id=client_id, device_id=device_id)
        session.add(row)
    row.direction = call.direction
    row.kind = call.kind
    row.state = call.state.value
    row.end_reason = call.end_reason
    row.started_ms = call.started_ms
    row.answered_ms = call.answered_ms
    row.connected_ms = call.connected_ms
    row.ended_ms = call.ended_ms
    row.nurse_user_id = nurse_user_id
    row.restarts = call.restarts
    row.quality = json.dumps(quality, separators=(",", ":")) if quality is not None else None


def timeline(session: Session, client_id: int, limit: int = 100) -> list[dict[str, Any]]:
    """The client's calls, newest first, as the timeline shows them."""
    rows = session.execute(
        select(CallRecord, User.display_name)
        .outerjoin(User, User.id == CallRecord.nurse_user_id)
        .where(CallRecord.client_id == client_id)
        .order_by(CallRecord.started_ms.desc())
        .limit(limit)
    ).all()
    out = []
    for rec, nurse_name in rows:
        end = rec.ended_ms
        out.append(
            {
                "id": rec.id,
                "client_id": rec.client_id,
                "device_id": rec.device_id,
                "direction": rec.direction,
                "kind": rec.kind,
                "state": rec.state,
                "outcome": rec.end_reason,
                "started_ms": rec.started_ms,
                "answered_ms": rec.answered_ms,
                "connected_ms": rec.connected_ms,
                "ended_ms": end,
                # Talk time: from the moment media flowed to the end; 0 for a call never connected.
                "duration_s": round((end - rec.connected_ms) / 1000, 1) if end and rec.connected_ms else 0.0,
                "nurse_user_id": rec.nurse_user_id,
                "nurse_name": nurse_name,
                "restarts": rec.restarts,
                "quality": json.loads(rec.quality) if rec.quality else None,
            }
        )
    return out
