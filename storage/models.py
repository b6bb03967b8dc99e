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
    "AlertNote",
    "Base",
    "ChainIncident",
    "Client",
    "Contact",
    "DeadLetter",
    "Device",
    "DeviceEvent",
    "DoseInstance",
    "DutyShift",
    "EscalationStep",
    "MaintenanceWindow",
    "MedicationDose",
    "Notification",
    "Policy",
    "ServiceRun",
    "Suppression",
    "User",
    "UserSession",
    "Visit",
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
    access_notes: Mapped[str] = mapped_column(String(500), default="", server_default="")  # key safe etc.
    care_notes: Mapped[str] = mapped_column(Text, default="", server_default="")
    # The record a nurse reads before she calls (migration 0011); "" when not known.
    phone: Mapped[str] = mapped_column(String(50), default="", server_default="")
    birth_date: Mapped[str] = mapped_column(String(10), default="", server_default="")  # YYYY-MM-DD
    language: Mapped[str] = mapped_column(String(50), default="", server_default="")
    gp: Mapped[str] = mapped_column(String(300), default="", server_default="")
    pharmacy: Mapped[str] = mapped_column(String(300), default="", server_default="")
    conditions: Mapped[str] = mapped_column(Text, default="", server_default="")
    allergies: Mapped[str] = mapped_column(Text, default="", server_default="")
    mobility: Mapped[str] = mapped_column(String(500), default="", server_default="")
    pets: Mapped[str] = mapped_column(String(300), default="", server_default="")
    # Never in a read: revealed by its own audited request (central.client_edit_api).
    key_safe_code: Mapped[str] = mapped_column(String(50), default="", server_default="")
    # The service's own test client (the end-to-end probe's device): never shown, listed or reported.
    system: Mapped[bool] = mapped_column(default=False, server_default=text("false"))


class Device(Base):
    """A device at a client's home; its id is its MQTT user name and topic segment."""

    __tablename__ = "devices"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    client_id: Mapped[int] = mapped_column(ForeignKey("clients.id"), index=True)
    kind: Mapped[str] = mapped_column(String(32))  # alarm_button | dispenser | video
    label: Mapped[str] = mapped_column(String(200), default="")
    # Mosquitto's $7$ PBKDF2-SHA512 hash: the embedded broker's accounts are rebuilt from it at every start
    # ('' once decommissioned).
    mqtt_password_hash: Mapped[str] = mapped_column(String(200), default="")
    created_ms: Mapped[int] = mapped_column(BigInteger)
    last_seen_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    online: Mapped[bool | None] = mapped_column(nullable=True)
    battery: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # What the device last said in a heartbeat; the interval drives silent-device detection.
    heartbeat_interval_s: Mapped[int | None] = mapped_column(Integer, nullable=True)
    firmware: Mapped[str | None] = mapped_column(String(64), nullable=True)
    signal: Mapped[int | None] = mapped_column(Integer, nullable=True)
    online_changed_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    # Set when the device was taken out of service: the broker refuses it, its history stays, no alert
    # is raised about its silence; its id is not given out again.
    decommissioned_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


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
    email: Mapped[str | None] = mapped_column(String(200), nullable=True)
    phone: Mapped[str | None] = mapped_column(String(50), nullable=True)
    disabled_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True)  # deactivated: no sign-in


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
    # An alarm that came under a msg_id already used for another message: the device's msg_id (the event is
    # stored under a derived one, and a device-fault alert is raised).
    reused_msg_id: Mapped[str | None] = mapped_column(String(64), nullable=True)


class DeadLetter(Base):
    """A device message that was refused: its first bytes, its size and hash, and the reason.

    A row stands for ``refusals`` refusals. A stored refusal (``refusals`` 1) keeps the first 4 KiB of its
    payload with the whole payload's size and SHA-256. A device's refusals beyond the gateway's cap in one
    clock hour (``gateway.ingest.bound_dead_letters``) are counted instead, per reason, on a summary row of
    that hour: payload empty, ``payload_size`` and ``payload_sha256`` NULL, the newest one's time, topic and
    detail.
    """

    __tablename__ = "dead_letters"
    # The gateway counts a device's rows of the hour (its cap), the console reads a device's recent ones.
    __table_args__ = (Index("ix_dead_letters_device_id_received_ms", "device_id", "received_ms"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    received_ms: Mapped[int] = mapped_column(BigInteger, index=True)
    topic: Mapped[str] = mapped_column(String(300))
    device_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    reason: Mapped[str] = mapped_column(String(32))
    detail: Mapped[str] = mapped_column(String(500))
    payload: Mapped[bytes] = mapped_column(LargeBinary)  # the first 4096 bytes at most
    payload_size: Mapped[int | None] = mapped_column(Integer, nullable=True)  # bytes, the whole payload
    payload_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)  # hex, the whole payload
    refusals: Mapped[int] = mapped_column(Integer, default=1, server_default=text("1"))


class Alert(Base):
    """Something a person at the care station must look at."""

    __tablename__ = "alerts"
    __table_args__ = (
        # What a repeat of the same problem is counted on (PagerDuty's dedup key): one alert per key while the
        # key is set. The key says what the alert is about — a device and kind, a dose instance, a visit, the
        # client's alarm while it is open — and is cleared when a repeat must become news again.
        Index(
            "uq_alerts_open_key",
            "open_key",
            unique=True,
            postgresql_where=text("open_key IS NOT NULL"),
            sqlite_where=text("open_key IS NOT NULL"),
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
    # Escalation: 0 = the care station's queue; each unanswered step raises it.
    level: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    assigned_to: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", name="fk_alerts_assigned_to_users"), nullable=True
    )
    # What the alert is about beyond client and kind (a dose id, a visit id), for resolving it later.
    subject: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # The dedup key while repeats are counted on this alert (see ``care.rules.open_key``); NULL after.
    open_key: Mapped[str | None] = mapped_column(String(120), nullable=True)
    # An alarm pressed while an earlier alarm of the client was in progress: the alarm that was running.
    incident_alert_id: Mapped[int | None] = mapped_column(
        ForeignKey("alerts.id", name="fk_alerts_incident_alert_id_alerts"), nullable=True
    )


class AlertChange(Base):
    """Append-only feed of alert changes; consoles follow it by ``seq`` and catch up from it."""

    __tablename__ = "alert_changes"

    seq: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    alert_id: Mapped[int] = mapped_column(ForeignKey("alerts.id"), index=True)
    at_ms: Mapped[int] = mapped_column(BigInteger)
    change: Mapped[str] = mapped_column(String(32))
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)


class AlertNote(Base):
    """A note a person added to an alert (also used for the note a late dose leaves)."""

    __tablename__ = "alert_notes"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    alert_id: Mapped[int] = mapped_column(ForeignKey("alerts.id"), index=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    at_ms: Mapped[int] = mapped_column(BigInteger)
    text: Mapped[str] = mapped_column(String(2000))


class EscalationStep(Base):
    """A pending timer: at ``due_ms`` do ``action`` for an alert, a dose instance or a visit (the one of
    the three it names). The source of truth: the in-process scheduler is rebuilt from this table at every
    start. Its lifecycle and actions: ``care.lifecycles``."""

    __tablename__ = "escalation_steps"
    __table_args__ = (
        Index(
            "ix_escalation_steps_pending",
            "due_ms",
            postgresql_where=text("state = 'pending'"),
            sqlite_where=text("state = 'pending'"),
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    alert_id: Mapped[int | None] = mapped_column(ForeignKey("alerts.id"), nullable=True, index=True)
    dose_instance_id: Mapped[int | None] = mapped_column(
        ForeignKey("dose_instances.id", name="fk_escalation_steps_dose_instance_id_dose_instances"),
        nullable=True,
        index=True,
    )
    visit_id: Mapped[int | None] = mapped_column(
        ForeignKey("visits.id", name="fk_escalation_steps_visit_id_visits"), nullable=True, index=True
    )
    action: Mapped[str] = mapped_column(String(32))  # escalate | dose_remind | dose_check | visit_check
    level: Mapped[int] = mapped_column(Integer, default=0)
    due_ms: Mapped[int] = mapped_column(BigInteger)
    state: Mapped[str] = mapped_column(String(16), default="pending")  # pending | done | cancelled
    done_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    late_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    created_ms: Mapped[int] = mapped_column(BigInteger)


class Notification(Base):
    """A message to a person: console, e-mail or webhook; cancelled when the alert is acknowledged."""

    __tablename__ = "notifications"
    __table_args__ = (
        Index(
            "ix_notifications_pending",
            "id",
            postgresql_where=text("state = 'pending'"),
            sqlite_where=text("state = 'pending'"),
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    alert_id: Mapped[int] = mapped_column(ForeignKey("alerts.id"), index=True)
    level: Mapped[int] = mapped_column(Integer, default=0)
    channel: Mapped[str] = mapped_column(String(16))  # email | webhook
    recipient: Mapped[str] = mapped_column(String(300))
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    subject: Mapped[str] = mapped_column(String(300))
    body: Mapped[str] = mapped_column(Text)
    # pending | sending | sent | failed | cancelled (care.lifecycles.NotificationState)
    state: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(String(500), nullable=True)
    created_ms: Mapped[int] = mapped_column(BigInteger)
    next_try_ms: Mapped[int] = mapped_column(BigInteger)
    sent_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class DutyShift(Base):
    """Who is on duty, in which role (and district), from ``starts_ms`` until ``ends_ms``."""

    __tablename__ = "duty_shifts"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    role: Mapped[str] = mapped_column(String(32))  # care_nurse | supervisor | district_nurse
    district: Mapped[str] = mapped_column(String(100), default="")
    starts_ms: Mapped[int] = mapped_column(BigInteger, index=True)
    ends_ms: Mapped[int] = mapped_column(BigInteger, index=True)


class Policy(Base):
    """Escalation settings of the organisation (client_id NULL) or one client, as JSON overrides."""

    __tablename__ = "policies"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    client_id: Mapped[int | None] = mapped_column(ForeignKey("clients.id"), nullable=True, unique=True)
    settings: Mapped[str] = mapped_column(Text)  # JSON
    updated_ms: Mapped[int] = mapped_column(BigInteger)


class MaintenanceWindow(Base):
    """A time when a client (in hospital, on holiday) or one device is not to raise alerts."""

    __tablename__ = "maintenance_windows"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    client_id: Mapped[int | None] = mapped_column(ForeignKey("clients.id"), nullable=True, index=True)
    device_id: Mapped[str | None] = mapped_column(ForeignKey("devices.id"), nullable=True, index=True)
    starts_ms: Mapped[int] = mapped_column(BigInteger)
    ends_ms: Mapped[int] = mapped_column(BigInteger)
    reason: Mapped[str] = mapped_column(String(200))
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    created_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    # Set when someone ended the window early (``ends_ms`` is then moved to that moment).
    ended_by: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", name="fk_maintenance_windows_ended_by_users"), nullable=True
    )


class Suppression(Base):
    """What a maintenance window kept from alerting: recorded, not lost."""

    __tablename__ = "suppressions"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    window_id: Mapped[int] = mapped_column(ForeignKey("maintenance_windows.id"), index=True)
    client_id: Mapped[int] = mapped_column(ForeignKey("clients.id"), index=True)
    device_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    kind: Mapped[str] = mapped_column(String(32))
    detail: Mapped[str] = mapped_column(String(300))
    at_ms: Mapped[int] = mapped_column(BigInteger)


class MedicationDose(Base):
    """One dose of a client's medication schedule (the schedule the dispenser should hold)."""

    __tablename__ = "medication_doses"
    __table_args__ = (UniqueConstraint("client_id", "dose_id", name="uq_medication_doses_client_dose"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    client_id: Mapped[int] = mapped_column(ForeignKey("clients.id"), index=True)
    device_id: Mapped[str | None] = mapped_column(ForeignKey("devices.id"), nullable=True)
    dose_id: Mapped[str] = mapped_column(String(64))
    at: Mapped[str] = mapped_column(String(5))  # HH:MM, the client's local time
    label: Mapped[str] = mapped_column(String(200), default="")


class DoseInstance(Base):
    """One due dose on one day: pending until taken, missed when the grace period passes untaken."""

    __tablename__ = "dose_instances"
    __table_args__ = (UniqueConstraint("client_id", "dose_id", "due_ms", name="uq_dose_instances"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    client_id: Mapped[int] = mapped_column(ForeignKey("clients.id"), index=True)
    device_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    dose_id: Mapped[str] = mapped_column(String(64))
    due_ms: Mapped[int] = mapped_column(BigInteger, index=True)
    # pending | taken | missed | taken_late | cancelled (removed from the schedule before it was due);
    # care.lifecycles.DoseState
    state: Mapped[str] = mapped_column(String(16), default="pending")
    reminded: Mapped[bool] = mapped_column(default=False)
    taken_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    alert_id: Mapped[int | None] = mapped_column(ForeignKey("alerts.id"), nullable=True)


class Contact(Base):
    """A person around the client: informal carer, GP, pharmacy."""

    __tablename__ = "contacts"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    client_id: Mapped[int] = mapped_column(ForeignKey("clients.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    relation: Mapped[str] = mapped_column(String(50))  # informal_carer | gp | pharmacy | family | other
    phone: Mapped[str | None] = mapped_column(String(50), nullable=True)
    email: Mapped[str | None] = mapped_column(String(200), nullable=True)
    notify_missed_dose: Mapped[bool] = mapped_column(default=False)
    # Who is called first comes first (migration 0011): the list's order, set by the nurse.
    position: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    keyholder: Mapped[bool] = mapped_column(default=False, server_default=text("false"))
    reachable: Mapped[str] = mapped_column(String(200), default="", server_default="")  # "weekdays after 17"


class Visit(Base):
    """Someone sent to the client's home: tracked until arrival is confirmed."""

    __tablename__ = "visits"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    alert_id: Mapped[int | None] = mapped_column(ForeignKey("alerts.id"), nullable=True, index=True)
    client_id: Mapped[int] = mapped_column(ForeignKey("clients.id"), index=True)
    sent_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    visitor: Mapped[str] = mapped_column(String(200))
    sent_ms: Mapped[int] = mapped_column(BigInteger)
    target_ms: Mapped[int] = mapped_column(BigInteger)
    arrived_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    # underway | arrived | cancelled (care.lifecycles.VisitState)
    state: Mapped[str] = mapped_column(String(16), default="underway")


class ServiceRun(Base):
    """One run of a component (gateway, monitor, central) from its start until its last heartbeat.

    The gaps between runs are the service's own downtime: device uptime leaves them out.
    """

    __tablename__ = "service_runs"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    component: Mapped[str] = mapped_column(String(32), index=True)  # gateway | monitor | central
    instance: Mapped[str] = mapped_column(String(100))
    started_ms: Mapped[int] = mapped_column(BigInteger)
    last_beat_ms: Mapped[int] = mapped_column(BigInteger, index=True)
    # What the component says of itself at its last beat (JSON): the gateway's broker link and store
    # errors, the monitor's last loop. ``central.health`` judges the chain from these rows.
    state: Mapped[str | None] = mapped_column(Text, nullable=True)


class ChainIncident(Base):
    """A time the alarm chain was broken, as the watchdog saw it; the supervisor is paged once for it."""

    __tablename__ = "chain_incidents"
    __table_args__ = (
        # One incident open at a time per scope, whichever process saw it first.
        Index(
            "uq_chain_incidents_open",
            "scope",
            unique=True,
            postgresql_where=text("ended_ms IS NULL"),
            sqlite_where=text("ended_ms IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    # Who watches: "chain" (central's watchdog: broker, gateway, monitor, probe) or "central" (the monitor
    # process watching central, which cannot report its own death).
    scope: Mapped[str] = mapped_column(String(32))
    started_ms: Mapped[int] = mapped_column(BigInteger, index=True)
    ended_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    problems: Mapped[str] = mapped_column(Text)  # JSON list of {code, text}, as first seen
    paged_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
