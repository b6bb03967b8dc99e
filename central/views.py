"""What the console shows of an alert: one dict per alert, joined with its client, device and people."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, aliased

from storage.models import Alert, Client, Device, User

__all__ = ["active_alert_views", "alert_views", "probe_alert_ids"]


def alert_views(session: Session, alert_ids: list[int]) -> list[dict[str, Any]]:
    return _views(session, Alert.id.in_(alert_ids))


def active_alert_views(session: Session) -> list[dict[str, Any]]:
    """Every alert not yet resolved, most urgent and oldest first."""
    return _views(session, Alert.state != "resolved")


def probe_alert_ids(session: Session, alert_ids: list[int]) -> set[int]:
    """Which of these alerts are the end-to-end probe's (never shown to a person)."""
    return set(session.scalars(select(Alert.id).where(Alert.id.in_(alert_ids), Alert.kind == "probe")))


def _views(session: Session, condition: Any) -> list[dict[str, Any]]:
    acker = aliased(User)
    rows = session.execute(
        select(Alert, Client, Device, acker)
        .join(Client, Client.id == Alert.client_id)
        .outerjoin(Device, Device.id == Alert.device_id)
        .outerjoin(acker, acker.id == Alert.acknowledged_by)
        .where(condition, Alert.kind != "probe")
        .order_by(Alert.priority, Alert.opened_ms, Alert.id)
    ).all()
    incidents = _incidents(session, {a.incident_alert_id for a, *_ in rows if a.incident_alert_id})
    return [
        {
            "id": alert.id,
            "kind": alert.kind,
            "priority": alert.priority,
            "state": alert.state,
            "detail": alert.detail,
            "count": alert.count,
            "level": alert.level,
            "answer_ms": alert.acknowledged_ms - alert.opened_ms
            if alert.acknowledged_ms is not None
            else None,
            "version": alert.version,
            "opened_ms": alert.opened_ms,
            "last_event_ms": alert.last_event_ms,
            "acknowledged_ms": alert.acknowledged_ms,
            "acknowledged_by": acked.display_name if acked else None,
            "resolved_ms": alert.resolved_ms,
            "outcome": alert.outcome,
            # An alarm pressed while an earlier alarm of the client was in progress: who has that one.
            "incident": incidents.get(alert.incident_alert_id) if alert.incident_alert_id else None,
            "client": {
                "id": client.id,
                "name": client.name,
                "address": client.address,
                "district": client.district,
            },
            "device": {
                "id": device.id,
                "label": device.label,
                "kind": device.kind,
                "online": device.online,
                "battery": device.battery,
            }
            if device
            else None,
        }
        for alert, client, device, acked in rows
    ]


def _incidents(session: Session, ids: set[int]) -> dict[int, dict[str, Any]]:
    """The running alarms that later alarms belong to: id, state, since when, and who took it."""
    if not ids:
        return {}
    rows = session.execute(
        select(Alert.id, Alert.state, Alert.opened_ms, Alert.acknowledged_ms, User.display_name)
        .outerjoin(User, User.id == Alert.acknowledged_by)
        .where(Alert.id.in_(ids))
    ).all()
    return {
        i: {"id": i, "state": state, "opened_ms": opened, "acknowledged_ms": acked, "acknowledged_by": name}
        for i, state, opened, acked, name in rows
    }
