"""Maintenance windows: a time when a client (in hospital, on holiday) or one device raises no routine alerts.

A window quiets device-state and dose alerts — the monitor records each one it held back as a
``suppressions`` row (``care.alert_store.open_alert``), so nothing is lost and the client's timeline shows
it —
but never an alarm: ``care.rules.quiet_in_window`` lets no priority-1 alert through the window.

The rules a window must meet (``check_window``, pure) and why:

- it is about a whole client *or* one device, never both: the monitor quiets everything of a window's
  client, so a device window keeps ``client_id`` empty (else the whole client would go quiet);
- it ends after it starts, and a start in the past is taken as now: a window cannot quiet what was already
  raised, and a form's "from 08:00" entered at 08:03 means "from now";
- it lasts at most :data:`MAX_DURATION_MS` (30 days): a window is a hole in the client's safety net for dose
  and device alerts; a longer absence is renewed on purpose, not forgotten;
- it starts at most :data:`MAX_LEAD_MS` (90 days) ahead: a holiday is booked months ahead, a start years
  ahead is a typing error;
- it says why (3-200 characters), for the nurse who sees the window on the console and the timeline.

Ending a window early moves its end to now (``ended_by`` names who); ending one that has not started yet
cancels it (its end is set to its start, so it never runs). A window is ``upcoming``, ``active`` or ``past``
(:func:`window_state`).

Exceptions (under ``care.errors.CareError``, drawn whole in ``care/__init__.py``)::

    WindowError
     ├── WindowInvalid        the request breaks a rule above, or names no existing client or device
     ├── WindowNotFound       no window with that id
     └── WindowAlreadyEnded   ending a window that is over
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

from sqlalchemy import ColumnElement, and_, func, or_, select
from sqlalchemy.orm import Session, aliased

from storage.models import Client, Device, MaintenanceWindow, Suppression, User

from .errors import CareError

__all__ = [
    "MAX_DURATION_MS",
    "MAX_LEAD_MS",
    "WINDOW_STATES",
    "WindowAlreadyEnded",
    "WindowError",
    "WindowInfo",
    "WindowInvalid",
    "WindowNotFound",
    "WindowState",
    "check_window",
    "create_window",
    "end_window",
    "list_windows",
    "window_state",
]

DAY_MS: Final = 24 * 3_600_000
# A hospital stay or a holiday rarely lasts longer; a longer quiet is renewed deliberately.
MAX_DURATION_MS: Final = 30 * DAY_MS
# Far enough ahead for a booked holiday; further is more likely a wrong year than a plan.
MAX_LEAD_MS: Final = 90 * DAY_MS
REASON_MIN: Final = 3
REASON_MAX: Final = 200  # the column's width

WindowState = Literal["upcoming", "active", "past"]
WINDOW_STATES: Final = ("upcoming", "active", "past")
# What ``list_windows`` may be asked for: one state, "current" (active and upcoming) or "all".
Which = Literal["current", "upcoming", "active", "past", "all"]


class WindowError(CareError):
    """A maintenance-window request that cannot be carried out."""


class WindowInvalid(WindowError, ValueError):
    """The window breaks a rule (see the module docstring), or its client or device does not exist."""


class WindowNotFound(WindowError, LookupError):
    """No window with that id."""


class WindowAlreadyEnded(WindowError):
    """The window is over already; there is nothing to end."""


@dataclass(frozen=True, slots=True)
class WindowInfo:
    """A window as people see it: whose, why, when, by whom, and how much it quieted so far."""

    id: int
    client_id: int
    client_name: str
    device_id: str | None
    device_label: str | None
    device_kind: str | None
    starts_ms: int
    ends_ms: int
    reason: str
    state: WindowState
    created_ms: int | None
    created_by: str | None
    ended_by: str | None
    suppressed: int


def window_state(starts_ms: int, ends_ms: int, now_ms: int) -> WindowState:
    """Where a window stands at ``now_ms``; a window cancelled before it ran (end at its start) is past."""
    if ends_ms <= starts_ms or now_ms >= ends_ms:
        return "past"
    return "upcoming" if now_ms < starts_ms else "active"


def check_window(
    *,
    client_id: int | None,
    device_id: str | None,
    starts_ms: int | None,
    ends_ms: int,
    reason: str,
    now_ms: int,
) -> tuple[int, int, str]:
    """Check a new window against the rules; return its (start, end, reason) as they will be stored."""
    if (client_id is None) == (device_id is None):
        raise WindowInvalid("a window is for a client or for one device: give exactly one of them")
    text = reason.strip()
    if not REASON_MIN <= len(text) <= REASON_MAX:
        raise WindowInvalid(f"give a reason of {REASON_MIN} to {REASON_MAX} characters")
    start = now_ms if starts_ms is None else max(starts_ms, now_ms)
    if ends_ms <= start:
        raise WindowInvalid("a window must end after it starts (and after now)")
    if start - now_ms > MAX_LEAD_MS:
        raise WindowInvalid(f"a window may start at most {MAX_LEAD_MS // DAY_MS} days ahead")
    if ends_ms - start > MAX_DURATION_MS:
        raise WindowInvalid(f"a window may last at most {MAX_DURATION_MS // DAY_MS} days; renew it after")
    return start, ends_ms, text


def create_window(
    session: Session,
    *,
    client_id: int | None = None,
    device_id: str | None = None,
    starts_ms: int | None = None,
    ends_ms: int,
    reason: str,
    user_id: int | None,
    now_ms: int,
) -> WindowInfo:
    """Add a window for a client or one device (checked by :func:`check_window`)."""
    start, end, text = check_window(
        client_id=client_id,
        device_id=device_id,
        starts_ms=starts_ms,
        ends_ms=ends_ms,
        reason=reason,
        now_ms=now_ms,
    )
    if client_id is not None and session.get(Client, client_id) is None:
        raise WindowInvalid(f"no client {client_id}")
    if device_id is not None and session.get(Device, device_id) is None:
        raise WindowInvalid(f"no device {device_id}")
    row = MaintenanceWindow(
        client_id=client_id,
        device_id=device_id,
        starts_ms=start,
        ends_ms=end,
        reason=text,
        created_by=user_id,
        created_ms=now_ms,
    )
    session.add(row)
    session.flush()
    return _info(session, row.id, now_ms)


def end_window(session: Session, *, window_id: int, user_id: int | None, now_ms: int) -> WindowInfo:
    """End a running window now, or cancel one that has not started; alerts are no longer held back."""
    row = session.get(MaintenanceWindow, window_id, with_for_update=True)
    if row is None:
        raise WindowNotFound(f"no maintenance window {window_id}")
    state = window_state(row.starts_ms, row.ends_ms, now_ms)
    if state == "past":
        raise WindowAlreadyEnded(f"maintenance window {window_id} is over already")
    row.ends_ms = now_ms if state == "active" else row.starts_ms
    row.ended_by = user_id
    session.flush()
    return _info(session, window_id, now_ms)


def list_windows(
    session: Session,
    *,
    now_ms: int,
    which: Which = "current",
    client_id: int | None = None,
    limit: int = 100,
) -> list[WindowInfo]:
    """Windows by state: running ones ending soonest first, then upcoming by start, then past newest first.

    ``client_id`` keeps to one client's windows, its devices' windows included.
    """
    conditions: dict[str, ColumnElement[bool]] = {
        "active": and_(
            MaintenanceWindow.starts_ms <= now_ms,
            MaintenanceWindow.ends_ms > now_ms,
            MaintenanceWindow.ends_ms > MaintenanceWindow.starts_ms,
        ),
        "upcoming": and_(
            MaintenanceWindow.starts_ms > now_ms, MaintenanceWindow.ends_ms > MaintenanceWindow.starts_ms
        ),
        "past": or_(
            MaintenanceWindow.ends_ms <= now_ms, MaintenanceWindow.ends_ms <= MaintenanceWindow.starts_ms
        ),
    }
    wanted = {"current": ("active", "upcoming"), "all": WINDOW_STATES}.get(which, (which,))
    out: list[WindowInfo] = []
    for state in ("active", "upcoming", "past"):
        if state not in wanted or len(out) >= limit:
            continue
        order = {
            "active": (MaintenanceWindow.ends_ms, MaintenanceWindow.id),
            "upcoming": (MaintenanceWindow.starts_ms, MaintenanceWindow.id),
            "past": (MaintenanceWindow.ends_ms.desc(), MaintenanceWindow.id.desc()),
        }[state]
        out += _query(session, conditions[state], client_id, order, limit - len(out), now_ms)
    return out


def _info(session: Session, window_id: int, now_ms: int) -> WindowInfo:
    [info] = _query(session, MaintenanceWindow.id == window_id, None, (MaintenanceWindow.id,), 1, now_ms)
    return info


def _query(
    session: Session,
    condition: ColumnElement[bool],
    client_id: int | None,
    order: tuple[object, ...],
    limit: int,
    now_ms: int,
) -> list[WindowInfo]:
    creator, ender = aliased(User), aliased(User)
    owner = func.coalesce(MaintenanceWindow.client_id, Device.client_id)
    query = (
        select(MaintenanceWindow, Client, Device, creator.display_name, ender.display_name)
        .outerjoin(Device, Device.id == MaintenanceWindow.device_id)
        .join(Client, Client.id == owner)
        .outerjoin(creator, creator.id == MaintenanceWindow.created_by)
        .outerjoin(ender, ender.id == MaintenanceWindow.ended_by)
        .where(condition)
        .order_by(*order)  # type: ignore[arg-type]
        .limit(limit)
    )
    if client_id is not None:
        query = query.where(owner == client_id)
    rows = session.execute(query).all()
    ids = [w.id for w, *_ in rows]
    counts: dict[int, int] = {}
    if ids:
        rows_n = session.execute(
            select(Suppression.window_id, func.count())
            .where(Suppression.window_id.in_(ids))
            .group_by(Suppression.window_id)
        ).all()
        counts = {int(window_id): int(n) for window_id, n in rows_n}
    return [
        WindowInfo(
            id=w.id,
            client_id=client.id,
            client_name=client.name,
            device_id=device.id if device else None,
            device_label=device.label if device else None,
            device_kind=device.kind if device else None,
            starts_ms=w.starts_ms,
            ends_ms=w.ends_ms,
            reason=w.reason,
            state=window_state(w.starts_ms, w.ends_ms, now_ms),
            created_ms=w.created_ms,
            created_by=made_by,
            ended_by=ended_by,
            suppressed=counts.get(w.id, 0),
        )
        for w, client, device, made_by, ended_by in rows
    ]
