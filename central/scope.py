"""Which client a request is about: from the ids in its path to the client and the client's district.

:func:`central.deps.require` asks this for every request of a user whose view is confined to a district
(:func:`central.access.confined_to`), so a route that names a client, an alert, a visit, a call or a device
in its path is kept to the district without doing anything itself. Ids in a request body (a call's or a
window's ``client_id``) are not read here: those routes are the care station's, whose roles see every
district.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Final

from sqlalchemy import select
from sqlalchemy.orm import Session

from storage.calls_models import CallRecord
from storage.models import Alert, Client, Device, Visit

from .ids import MAX_ID

__all__ = ["SCOPED_PARAMS", "client_about"]


def _int(raw: str) -> int | None:
    # ASCII digits only, at most MAX_ID: anything else is the route's 422, not a lookup.
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 19:
        return None
    value = int(raw)
    return value if 1 <= value <= MAX_ID else None


def _by_client(session: Session, raw: str) -> int | None:
    return _int(raw)


def _by_alert(session: Session, raw: str) -> int | None:
    alert_id = _int(raw)
    return None if alert_id is None else session.scalar(select(Alert.client_id).where(Alert.id == alert_id))


def _by_visit(session: Session, raw: str) -> int | None:
    visit_id = _int(raw)
    return None if visit_id is None else session.scalar(select(Visit.client_id).where(Visit.id == visit_id))


def _by_call(session: Session, raw: str) -> int | None:
    if len(raw) > 32:
        return None
    return session.scalar(select(CallRecord.client_id).where(CallRecord.id == raw))


def _by_device(session: Session, raw: str) -> int | None:
    if len(raw) > 64:
        return None
    return session.scalar(select(Device.client_id).where(Device.id == raw))


# Path parameter -> how to find the client it belongs to. A route naming a client by another parameter must
# add it here (tests/test_access_matrix.py fails on a client-scoped route that is not kept to a district).
SCOPED_PARAMS: Final[dict[str, Callable[[Session, str], int | None]]] = {
    "client_id": _by_client,
    "alert_id": _by_alert,
    "visit_id": _by_visit,
    "call_id": _by_call,
    "device_id": _by_device,
}


def client_about(session: Session, path_params: Mapping[str, str]) -> tuple[int, str] | None:
    """The (client id, district) the path is about; None when it names none, or none that exists."""
    for name, find in SCOPED_PARAMS.items():
        raw = path_params.get(name)
        if raw is None:
            continue
        client_id = find(session, str(raw))
        if client_id is None:
            return None
        district = session.scalar(select(Client.district).where(Client.id == client_id))
        return None if district is None else (client_id, district)
    return None
