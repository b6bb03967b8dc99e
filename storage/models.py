"""The system of record: SQLAlchemy tables shared by every component.

Times are integers of milliseconds since the Unix epoch (UTC) throughout: the pure cores take ``now_ms``,
SQLite and PostgreSQL store them alike, and no time zone is ever guessed.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = [
    "Alert",
    "AlertChange",
    "Base",
    "Client",
    "DeadLetter",
    "Device",
    "DeviceEvent",
    "User",
    "UserSession",
]

# SQLite only gives AUTOINCREMENT-like behaviour to INTEGER PRIMARY KEY; BigInteger elsewhere.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    pass


class Client(Base):
    """A person living at home who is cared for."""

    __tablename__ = "clients"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200))
    address: Mapped[str] = mapped_column(String(300), default="")
    district: Mapped[str] = mapped_column(String(100), default="")
    created_ms: Mapped[int] = mapped_column(BigInteger)


class Device(Base):
    """A device at a client's home; its id is its MQTT user name and topic segment."""

    __tablename__ = "devices"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    client_id: Mapped[int] = mapped_column(ForeignKey("clients.id"), index=True)
    kind: Mapped[str] = mapped_column(String(32))  # alarm_button | dispenser | video
    label: Mapped[str] = mapped_column(String(200), default="")
    # Mosquitto's PBKDF2-SHA512 line format, so the broker's password file can be rebuilt from here.
    mqtt_password_hash: Mapped[str] = mapped_column(String(200), default="")
    created_ms: Mapped[int] = mapped_column(BigInteger)
    last_seen_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    online: Mapped[bool | None] = mapped_column(nullable=True)
    battery: Mapped[int | None] = mapped_column(Integer, nullable=True)


class User(Base):
    """A person who signs in to the console."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    display_name: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(32))  # care_nurse | district_nurse | supervisor | admin
    password_hash: Mapped[str] = mapped_column(String(200))
    district: Mapped[str] = mapped_column(String(100), default="")
    created_ms: Mapped[int] = mapped_column(BigInteger)


class UserSession(Base):
    """A signed-in browser; only the SHA-256 of the cookie token is kept."""

    __tablename__ = "user_sessions"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    created_ms: Mapped[int] = mapped_column(BigInteger)
    expires_ms: Mapped[int] = mapped_column(BigInteger)


class DeviceEvent(Base):
    """An event a device sent (alarm, dose event), stored once per (device, msg_id) before it is acked."""

    __tablename__ = "device_events"
    __table_args__ = (
        UniqueConstraint("device_id", "msg_id", name="uq_device_events_device_msg"),
        # The monitor's work queue: only rows not yet handled are in this index.
        Index(
            "ix_device_events_unhandled",
            "id",
            postgresql_where=text("handled_ms IS NULL"),
            sqlite_where=text("handled_ms IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    device_id: Mapped[str] = mapped_column(String(64))
    msg_id: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))
    device_ts_ms: Mapped[int] = mapped_column(BigInteger)
    received_ms: Mapped[int] = mapped_column(BigInteger)
    payload: Mapped[str] = mapped_column(Text)  # the validated message as JSON
    handled_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class DeadLetter(Base):
    """A device message that was refused, kept with its raw bytes and the reason."""

    __tablename__ = "dead_letters"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    received_ms: Mapped[int] = mapped_column(BigInteger, index=True)
    topic: Mapped[str] = mapped_column(String(300))
    device_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    reason: Mapped[str] = mapped_column(String(32))
    detail: Mapped[str] = mapped_column(String(500))
    payload: Mapped[bytes] = mapped_column(LargeBinary)


class Alert(Base):
    """Something a person at the care station must look at."""

    __tablename__ = "alerts"
    __table_args__ = (
        # One open (not resolved) alert per client and kind: a repeat raises ``count`` instead.
        Index(
            "uq_alerts_one_open",
            "client_id",
            "kind",
            unique=True,
            postgresql_where=text("state <> 'resolved'"),
            sqlite_where=text("state <> 'resolved'"),
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    client_id: Mapped[int] = mapped_column(ForeignKey("clients.id"), index=True)
    device_id: Mapped[str | None] = mapped_column(ForeignKey("devices.id"), nullable=True)
    kind: Mapped[str] = mapped_column(String(32))
    priority: Mapped[int] = mapped_column(Integer)  # 1 = critical ... 4 = low
    state: Mapped[str] = mapped_column(String(16), index=True)
    detail: Mapped[str] = mapped_column(String(300), default="")
    count: Mapped[int] = mapped_column(Integer, default=1)
    version: Mapped[int] = mapped_column(Integer, default=1)
    opened_ms: Mapped[int] = mapped_column(BigInteger)
    last_event_ms: Mapped[int] = mapped_column(BigInteger)
    source_event_id: Mapped[int | None] = mapped_column(ForeignKey("device_events.id"), nullable=True)
    acknowledged_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    acknowledged_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    resolved_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    resolved_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    outcome: Mapped[str | None] = mapped_column(String(32), nullable=True)


class AlertChange(Base):
    """Append-only feed of alert changes; consoles follow it by ``seq`` and catch up from it."""

    __tablename__ = "alert_changes"

    seq: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    alert_id: Mapped[int] = mapped_column(ForeignKey("alerts.id"), index=True)
    at_ms: Mapped[int] = mapped_column(BigInteger)
    change: Mapped[str] = mapped_column(String(32))
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
