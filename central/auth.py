"""Sign-in: argon2 password hashes, server-side sessions behind an HttpOnly cookie, and a failure limit."""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from storage.models import User, UserSession

__all__ = [
    "COOKIE_NAME",
    "ROLES",
    "FailureLimiter",
    "SignedInUser",
    "create_session",
    "end_session",
    "hash_password",
    "user_for_token",
    "verify_password",
]

COOKIE_NAME = "carealarm_session"
ROLES = ("care_nurse", "district_nurse", "supervisor", "admin")

_hasher = PasswordHasher()
# Verifying against this keeps the time of a sign-in with an unknown name like that of a known one.
_DUMMY_HASH = _hasher.hash("not-a-real-password")


@dataclass(frozen=True, slots=True)
class SignedInUser:
    id: int
    username: str
    display_name: str
    role: str
    district: str


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(session: Session, username: str, password: str) -> SignedInUser | None:
    user = session.scalars(select(User).where(User.username == username)).first()
    try:
        _hasher.verify(user.password_hash if user else _DUMMY_HASH, password)
    except (VerificationError, InvalidHashError):
        return None
    return _signed_in(user) if user else None


def create_session(session: Session, user_id: int, now_ms: int, hours: float) -> str:
    """Create a session and return the cookie token (only its hash is stored)."""
    token = secrets.token_urlsafe(32)
    session.add(
        UserSession(
            token_hash=_digest(token),
            user_id=user_id,
            created_ms=now_ms,
            expires_ms=now_ms + int(hours * 3_600_000),
        )
    )
    return token


def end_session(session: Session, token: str) -> None:
    session.execute(delete(UserSession).where(UserSession.token_hash == _digest(token)))


def user_for_token(session: Session, token: str, now_ms: int) -> SignedInUser | None:
    row = session.execute(
        select(User)
        .join(UserSession, UserSession.user_id == User.id)
        .where(UserSession.token_hash == _digest(token), UserSession.expires_ms > now_ms)
    ).scalar_one_or_none()
    return _signed_in(row) if row else None


class FailureLimiter:
    """Refuse sign-in for a name after ``limit`` failures within ``window_s`` (memory only, per process)."""

    def __init__(
        self, limit: int = 5, window_s: float = 300.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._limit = limit
        self._window_s = window_s
        self._clock = clock
        self._failures: dict[str, list[float]] = {}
        self._lock = threading.Lock()

    def blocked(self, username: str) -> bool:
        with self._lock:
            return len(self._recent(username)) >= self._limit

    def fail(self, username: str) -> None:
        with self._lock:
            self._failures[username] = [*self._recent(username), self._clock()]

    def succeed(self, username: str) -> None:
        with self._lock:
            self._failures.pop(username, None)

    def _recent(self, username: str) -> list[float]:
        cutoff = self._clock() - self._window_s
        return [t for t in self._failures.get(username, []) if t > cutoff]


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _signed_in(user: User) -> SignedInUser:
    return SignedInUser(user.id, user.username, user.display_name, user.role, user.district)
