"""Sign-in: argon2 password hashes, server-side sessions behind an HttpOnly cookie, failure limits
(:mod:`central.signin_limits`), and what ends a user's sessions: deactivation and a password reset."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from storage.models import User, UserSession

from .signin_limits import FailureLimiter

__all__ = [
    "COOKIE_NAME",
    "ROLES",
    "FailureLimiter",
    "SignedInUser",
    "create_session",
    "disable_user",
    "enable_user",
    "end_session",
    "hash_password",
    "reset_password",
    "revoke_sessions",
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
    # A deactivated user's right password still signs nobody in (checked after the hash: same timing).
    return _signed_in(user) if user and user.disabled_ms is None else None


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
        .where(
            UserSession.token_hash == _digest(token),
            UserSession.expires_ms > now_ms,
            User.disabled_ms.is_(None),
        )
    ).scalar_one_or_none()
    return _signed_in(row) if row else None


def revoke_sessions(session: Session, user_id: int) -> int:
    """End every session of a user at once; return how many there were."""
    result = session.execute(delete(UserSession).where(UserSession.user_id == user_id))
    return int(getattr(result, "rowcount", 0) or 0)


def disable_user(session: Session, user: User, now_ms: int) -> int:
    """Deactivate a user: sign-in is refused and every session ends now; return the sessions ended."""
    if user.disabled_ms is None:
        user.disabled_ms = now_ms
    return revoke_sessions(session, user.id)


def enable_user(user: User) -> None:
    """Let a deactivated user sign in again (with the password they had, or a reset one)."""
    user.disabled_ms = None


def reset_password(session: Session, user: User, password: str) -> int:
    """Give a user a new password (checked by the caller); every session of theirs ends now."""
    user.password_hash = hash_password(password)
    return revoke_sessions(session, user.id)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _signed_in(user: User) -> SignedInUser:
    return SignedInUser(user.id, user.username, user.display_name, user.role, user.district)
