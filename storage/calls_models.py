"""The calls tables, on the shared metadata of :mod:`storage.models` so Alembic sees them."""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from storage.models import Base

__all__ = ["CallRecord", "VideoConsent"]


class CallRecord(Base):
    """One video call or monitoring session: the client's timeline entry and, for monitoring, its audit."""

    __tablename__ = "calls"
    __table_args__ = (Index("ix_calls_client_started", "client_id", "started_ms"),)

    # An unguessable hex id: it also names the call in the ring command and the signalling URLs.
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    client_id: Mapped[int] = mapped_column(ForeignKey("clients.id"))
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id"))
    direction: Mapped[str] = mapped_column(String(16))  # outbound (station -> client) | inbound
    kind: Mapped[str] = mapped_column(String(16))  # video | monitoring
    state: Mapped[str] = mapped_column(String(16), index=True)  # ringing | accepted | connected | ended
    end_reason: Mapped[str | None] = mapped_column(String(32), nullable=True)
    started_ms: Mapped[int] = mapped_column(BigInteger)
    answered_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    connected_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    ended_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    nurse_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    restarts: Mapped[int] = mapped_column(Integer, default=0)
    # {"samples", "fps_mean", "fps_min", "loss_pct_max", "rtt_ms_mean"} from the browser's WebRTC stats.
    quality: Mapped[str | None] = mapped_column(Text, nullable=True)


class VideoConsent(Base):
    """What the client (or their representative) agreed to, as recorded by a member of staff."""

    __tablename__ = "video_consents"

    client_id: Mapped[int] = mapped_column(ForeignKey("clients.id"), primary_key=True)
    # Video monitoring: a view into the home without the client answering (always signalled on the device).
    monitoring_allowed: Mapped[bool] = mapped_column(Boolean, default=False)
    # The care plan lets the device answer a call from the care station by itself.
    auto_answer: Mapped[bool] = mapped_column(Boolean, default=False)
    recorded_by: Mapped[int] = mapped_column(ForeignKey("users.id"))
    recorded_ms: Mapped[int] = mapped_column(BigInteger)
