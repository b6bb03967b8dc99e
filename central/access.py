"""Who may do what: one pure table (role x action -> allowed) and the district rule.

The table is the single place to read the permissions from; ``may`` and ``in_scope`` take plain data and
do no I/O, so the tests can walk every cell. Every route's check is :func:`central.deps.require` fed by
this table (``Annotated[SignedInUser, Depends(require("client.read"))]``): it signs the user in (401),
refuses a role the table does not allow (403, with a body that names the role and the action) and, for a
district nurse, refuses a client of another district (403, audited as ``<action>.refused``): the client is
found from the path's client, alert, visit, call or device id (:mod:`central.scope`), so a new route
cannot forget the district. The WebSockets ask the same (:func:`central.deps.socket_user`). The routes
that ask nothing are :data:`PUBLIC_ROUTES`; ``tests/test_access_matrix.py`` walks them all.

The district rule is deliberate: district nurses see their own district only, everywhere; the care
station (care nurses, supervisors, admins) sees every district, because an alarm from any client reaches
it and must be answered at once (docs/privacy.md).

Roles (``central.auth.ROLES``):

- ``care_nurse`` — answers alerts at the care station; reads any client's record;
- ``district_nurse`` — visits clients at home; reads only the clients of her own district;
- ``supervisor`` — a care-station nurse who also oversees: reads the audit log;
- ``admin`` — runs the service: reads records and the audit log, but writes no care notes.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "ACTIONS",
    "CARE_STATION_ROLES",
    "POLICY",
    "PUBLIC_ROUTES",
    "confined_to",
    "in_scope",
    "may",
    "refusal",
]

CARE_NURSE, DISTRICT_NURSE, SUPERVISOR, ADMIN = "care_nurse", "district_nurse", "supervisor", "admin"
# The roles that watch the care station's queue (central.routes' console roles).
CARE_STATION_ROLES: Final = frozenset({CARE_NURSE, SUPERVISOR, ADMIN})
_EVERYONE: Final = frozenset({CARE_NURSE, DISTRICT_NURSE, SUPERVISOR, ADMIN})
_CARE_STAFF: Final = frozenset({CARE_NURSE, DISTRICT_NURSE, SUPERVISOR})
_OVERSIGHT: Final = frozenset({SUPERVISOR, ADMIN})
_ADMINS: Final = frozenset({ADMIN})

# action -> (roles allowed, what the action is, for the 403 body "the role X may not <what>").
ACTIONS: Final[dict[str, tuple[frozenset[str], str]]] = {
    "client.list": (_EVERYONE, "list clients"),
    "client.read": (_EVERYONE, "read a client's record"),
    "client.timeline": (_EVERYONE, "read a client's timeline"),
    # A care note is a clinical entry: written by care staff, not by the service's administrators.
    "client.note": (_CARE_STAFF, "add a care note"),
    "audit.read": (_OVERSIGHT, "read the audit log"),
    # Keeping the record right (central.client_edit_api): whoever learns a new phone number or keyholder.
    # District nurses edit their own district's clients only (the district rule).
    "client.edit": (_EVERYONE, "edit a client's record"),
    # Letting someone into a home is care work: nurses and supervisors, each reveal audited.
    "client.key_safe": (_CARE_STAFF, "reveal a key-safe code"),
    # The care station's console (central.routes, central.calls): the queue and the live feed, taking,
    # resolving, assigning and noting alerts, sending visits, calling clients and taking their calls.
    "alert.answer": (CARE_STATION_ROLES, "answer alerts"),
    # Maintenance windows (central.windows_api): seeing them goes with seeing the queue, creating and ending
    # one (keeping alerts off the queue) with taking alerts off it.
    "alert.list": (CARE_STATION_ROLES, "see the alert queue"),
    "alert.acknowledge": (CARE_STATION_ROLES, "acknowledge alerts"),
    "visit.arrived": (_EVERYONE, "confirm a visit's arrival"),
    # Recording what a client agreed to is done by the staff who discuss it with them.
    "consent.record": (frozenset({DISTRICT_NURSE, SUPERVISOR, ADMIN}), "record consent"),
    # The daily running of the care station (central.manage_api, central.rejections_api): clients, devices,
    # schedules, the roster, users and what devices sent that was refused.
    "station.manage": (_OVERSIGHT, "manage the care station (supervisors and admins only)"),
    # What creates broker credentials or people: a supervisor who could add users could make herself admin.
    "device.provision": (_ADMINS, "do this (admins only)"),
    "user.manage": (_ADMINS, "do this (admins only)"),
    # Every nurse's answer times and every client's medication: supervision, not the console.
    "report.read": (_OVERSIGHT, "see reports (supervisors and admins only)"),
}

# The routes that ask no action: signing in and out, who am I (any signed-in user, about herself only), and
# the operations probes (central.routes). Static files and the console's page are not in the schema.
PUBLIC_ROUTES: Final = frozenset(
    {
        ("POST", "/api/session"),
        ("DELETE", "/api/session"),
        ("GET", "/api/me"),
        ("GET", "/livez"),
        ("GET", "/healthz"),
        ("GET", "/metrics"),
    }
)

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
