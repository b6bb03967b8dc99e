"""The web layer's own errors, and the one table from every domain error to its HTTP status.

Routes raise these (or let the care domain's errors rise); :func:`central.app.create_app` turns each into
``{"detail": ...}`` with its status, in one place. Exceptions::

    CentralError          a request the web layer refuses: .status, .detail
     ├── NotFound         404  no such client, device, shift …
     ├── Conflict         409  the thing is in a state that forbids it (a decommissioned device …)
     └── Unprocessable    422  a request valid in shape but not in meaning (no such user to assign …)

The domain's errors (:data:`DOMAIN_STATUS`) keep their own messages; only their status is chosen here.
"""

from __future__ import annotations

from typing import Final

from care.alert_store import AlertConflict, AlertNotFound
from care.alerts import IllegalTransition
from care.visits import VisitNotFound
from care.windows import WindowAlreadyEnded, WindowInvalid, WindowNotFound
from storage.registry import RegistryError

from .calls.signalling import CallRefused
from .timeline import BadCursor

__all__ = [
    "DOMAIN_STATUS",
    "CentralError",
    "Conflict",
    "NotFound",
    "Unprocessable",
    "detail_of",
    "status_of",
]


class CentralError(Exception):
    """A request the web layer refuses, with the HTTP status that says why."""

    status = 400

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class NotFound(CentralError):
    status = 404


class Conflict(CentralError):
    status = 409


class Unprocessable(CentralError):
    status = 422


# Domain error -> HTTP status. A lookup that fails is a 404; a move the state forbids, or a change that kept
# losing a race, a 409; a request that breaks a rule of the domain, a 422.
DOMAIN_STATUS: Final[dict[type[Exception], int]] = {
    AlertNotFound: 404,
    VisitNotFound: 404,
    WindowNotFound: 404,
    IllegalTransition: 409,
    AlertConflict: 409,
    WindowAlreadyEnded: 409,
    WindowInvalid: 422,
    RegistryError: 422,  # a duplicate id, a reserved name, an unknown kind or client
    BadCursor: 422,
}


def status_of(exc: Exception) -> int:
    """The HTTP status of a central or domain error (its nearest class in the table)."""
    if isinstance(exc, CentralError | CallRefused):
        return exc.status
    for cls in type(exc).__mro__:
        if cls in DOMAIN_STATUS:
            return DOMAIN_STATUS[cls]
    raise LookupError(f"no HTTP status for {type(exc).__name__}")


def detail_of(exc: Exception) -> str:
    """The ``detail`` of the answer: the error's own message (an unknown id: "no alert 7")."""
    if isinstance(exc, CentralError | CallRefused):
        return exc.detail
    if isinstance(exc, AlertNotFound):
        return f"no alert {_first(exc)}"
    if isinstance(exc, VisitNotFound):
        return f"no visit {_first(exc)} under way"
    return str(exc)


def _first(exc: Exception) -> object:
    return exc.args[0] if exc.args else "?"
