"""The client record's own tables, on the shared metadata of :mod:`storage.models` so Alembic sees them.

``client_notes`` holds care notes written on a client's timeline; ``audit_log`` holds one row for every
read of a client's record and every action on it (who, when, what, which client or alert, and the reason
given when no alert of theirs concerned the client). The audit log is append-only: nothing here updates
or deletes a row of it.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from storage.models import Base, BigId

__all__ = ["AuditEntry", "ClientNote"]


class ClientNote(Base):
    """A care note on a client's timeline (not tied to an alert)."""

    __tablename__ = "client_notes"
    __table_args__ = (Index("ix_client_notes_client_at", "client_id", "at_ms"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    client_id: Mapped[int] = mapped_column(ForeignKey("clients.id", name="fk_client_notes_client_id_clients"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", name="fk_client_notes_user_id_users"))
    at_ms: Mapped[int] = mapped_column(BigInteger)
    text: Mapped[str] = mapped_column(String(2000))


class AuditEntry(Base):
    """Who read or did what, when, about which client or alert, and why (when a reason was asked)."""

    __tablename__ = "audit_log"
    __table_args__ = (
        Index("ix_audit_log_at", "at_ms"),
        Index("ix_audit_log_user_at", "user_id", "at_ms"),
        Index("ix_audit_log_client_at", "client_id", "at_ms"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    at_ms: Mapped[int] = mapped_column(BigInteger)
    # Users are deactivated, never deleted, while the audit log names them: the key keeps it that way.
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", name="fk_audit_log_user_id_users"))
    action: Mapped[str] = mapped_column(String(64))
    # Plain ids, no foreign keys: an audit row must outlive whatever it is about.
    client_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    alert_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    reason: Mapped[str | None] = mapped_column(String(500), nullable=True)
    detail: Mapped[str] = mapped_column(String(500), default="")
