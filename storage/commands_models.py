"""The commands table, on the shared metadata of :mod:`storage.models` so Alembic sees it."""

from __future__ import annotations

from sqlalchemy import BigInteger, ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from storage.models import Base

__all__ = ["CommandRecord"]


class CommandRecord(Base):
    """A command sent to a device over MQTT, and the device's own answer (its ``cmdack``) once it came."""

    __tablename__ = "commands"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # the cmd_id on the wire
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id"), index=True)
    command: Mapped[str] = mapped_column(String(32))
    args: Mapped[str] = mapped_column(Text)  # JSON, as sent
    sent_ms: Mapped[int] = mapped_column(BigInteger)
    # None until the device answers: done | failed | refused; not_sent when the broker was unreachable.
    result: Mapped[str | None] = mapped_column(String(16), nullable=True)
    result_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
