"""Who may do what: one pure table (role x action -> allowed), the district rule, and their FastAPI guard.

The table is the single place to read the permissions from; ``may`` and ``in_scope`` take plain data and
do no I/O, so the tests can walk every cell. ``require(action)`` gives the dependency every client-record
endpoint uses (``Annotated[SignedInUser, Depends(require("client.read"))]``): it signs the user in (401)
and refuses a role the table does not allow (403, with a body that names the role and the action).

Roles (``central.auth.ROLES``):

- ``care_nurse`` — answers alerts at the care station; reads any client's record;
- ``district_nurse`` — visits clients at home; reads only the clients of her own district;
- ``supervisor`` — a care-station nurse who also oversees: reads the audit log;
- ``admin`` — runs the service: reads records and the audit log, but writes no care notes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from fastapi import Depends, HTTPException

from .auth import SignedInUser

__all__ = [
    "ACTIONS",
    "CARE_STATION_ROLES",
    "POLICY",
    "confined_to",
    "in_scope",
    "may",
    "refusal",
    "require",
]

CARE_NURSE, DISTRICT_NURSE, SUPERVISOR, ADMIN = "care_nurse", "district_nurse", "supervisor", "admin"
# The roles that watch the care station's queue (central.routes' console roles).
CARE_STATION_ROLES: Final = frozenset({CARE_NURSE, SUPERVISOR, ADMIN})
_EVERYONE: Final = frozenset({CARE_NURSE, DISTRICT_NURSE, SUPERVISOR, ADMIN})
_CARE_STAFF: Final = frozenset({CARE_NURSE, DISTRICT_NURSE, SUPERVISOR})
_OVERSIGHT: Final = frozenset({SUPERVISOR, ADMIN})

# action -> (roles allowed, what the action is, for the 403 body "the role X may not <what>").
ACTIONS: Final[dict[str, tuple[frozenset[str], str]]] = {
    "client.list": (_EVERYONE, "list clients"),
    "client.read": (_EVERYONE, "read a client's record"),
    "client.timeline": (_EVERYONE, "read a client's timeline"),
    # A care note is a clinical entry: written by care staff, not by the service's administrators.
    "client.note": (_CARE_STAFF, "add a care note"),
    "audit.read": (_OVERSIGHT, "read the audit log"),
    # The existing care-station actions (central.routes, central.calls), so the table is complete.
    "alert.list": (CARE_STATION_ROLES, "see the alert queue"),
    "alert.acknowledge": (CARE_STATION_ROLES, "acknowledge alerts"),
    "alert.resolve": (CARE_STATION_ROLES, "resolve alerts"),
    "alert.assign": (CARE_STATION_ROLES, "assign alerts"),
    "alert.note": (CARE_STATION_ROLES, "add notes to alerts"),
    "visit.send": (CARE_STATION_ROLES, "send a visit"),
    "visit.arrived": (_EVERYONE, "confirm a visit's arrival"),
    "call.start": (CARE_STATION_ROLES, "call a client"),
    "consent.record": (frozenset({DISTRICT_NURSE, SUPERVISOR, ADMIN}), "record video consent"),
    "user.manage": (frozenset({ADMIN}), "manage users"),
}

# The role × action table itself, derived once: POLICY[(role, action)] is True when allowed.
POLICY: Final[dict[tuple[str, str], bool]] = {
    (role, action): role in roles for action, (roles, _what) in ACTIONS.items() for role in _EVERYONE
}


def may(role: str, action: str) -> bool:
    """Whether ``role`` may do ``action``; an unknown role or action is refused."""
    return POLICY.get((role, action), False)


def refusal(role: str, action: str) -> str:
    """The 403 body's sentence for a refused action."""
    what = ACTIONS[action][1] if action in ACTIONS else action
    return f"the role {role} may not {what}"


def in_scope(role: str, user_district: str, client_district: str) -> bool:
    """Whether a user of ``role`` in ``user_district`` may see a client of ``client_district``.

    District nurses see only their own district's clients (and none while they have no district); the care
    station sees every client.
    """
    if role == DISTRICT_NURSE:
        return bool(user_district) and user_district == client_district
    return role in _EVERYONE


def confined_to(role: str, user_district: str) -> str | None:
    """The one district a user's view is confined to ("" for none at all), or None for every district."""
    return user_district if role == DISTRICT_NURSE else None


def require(action: str) -> Callable[[SignedInUser], SignedInUser]:
    """A dependency: the signed-in user, when the table lets their role do ``action``; else 403."""
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action}")
    # Imported here, not at the top: central.routes may use require() itself, once current_user is defined.
    from .routes import current_user

    # A default, not Annotated: the annotation is a string resolved in this module, where current_user is
    # not a global (see the import above).
    def guard(user: SignedInUser = Depends(current_user)) -> SignedInUser:  # noqa: B008
        if not may(user.role, action):
            raise HTTPException(status_code=403, detail=refusal(user.role, action))
        return user

    guard.__name__ = f"require_{action.replace('.', '_')}"
    return guard
