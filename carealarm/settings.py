"""Settings from the environment (``CAREALARM_*``), created by the program's entry points, never at import."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings"]


class Settings(BaseSettings):
    """Everything configurable; the defaults are the embedded development set-up."""

    model_config = SettingsConfigDict(env_prefix="CAREALARM_", extra="ignore")

    env: Literal["development", "production"] = "development"
    data_dir: Path = Path("var")
    # Empty means: the embedded SQLite file ``<data_dir>/carealarm.sqlite3``.
    database_url: str = ""
    # Empty means: start the embedded Mosquitto on ``embedded_mqtt_port``.
    mqtt_url: str = ""
    # 1883 is usually taken by a system broker; the embedded one keeps clear of it.
    embedded_mqtt_port: int = 11883
    # A TLS listener of the embedded broker for devices (0 = none); certificate and key files (PEM).
    embedded_mqtt_tls_port: int = 0
    mqtt_tls_certfile: Path | None = None
    mqtt_tls_keyfile: Path | None = None
    # For mqtts:// URLs: the CA that signed the broker's certificate, when it is not a public one.
    mqtt_ca_file: Path | None = None
    # Prometheus /metrics of a component running without central (0 = off; central serves /metrics).
    metrics_port: int = 0
    http_host: str = "127.0.0.1"
    http_port: int = 8000
    gateway_name: str = "gw1"
    # Several gateways share the device traffic through MQTT shared subscriptions ($share/<group>/...).
    gateway_share_group: str = ""
    # How long the console's session cookie lives: one long night shift plus a margin.
    session_hours: float = 14.0
    # Dose times in a schedule are the clients' local time.
    timezone: str = "Europe/Amsterdam"
    # Notifications to people off the console. E-mail over SMTP (empty host = e-mail off):
    smtp_host: str = ""
    smtp_port: int = 25
    smtp_from: str = "carealarm@localhost"
    smtp_username: str = ""
    smtp_password: str = ""
    smtp_starttls: bool = False
    # A signed webhook (empty URL = off): POST JSON with an HMAC-SHA256 signature header.
    webhook_url: str = ""
    webhook_secret: str = ""
    # Fallback poll when no change hint arrives over MQTT (hints normally wake components at once).
    poll_interval_s: float = Field(default=1.0, gt=0, le=60)
    # The end-to-end probe: a test alarm through broker, gateway, database, monitor and feed this often
    # (0: off); late after ``probe_late_s`` it turns the console's banner on (central/watchdog.py).
    probe_interval_s: float = Field(default=60.0, ge=0, le=3600)
    probe_late_s: float = Field(default=20.0, gt=0, le=600)
    # The supervisor is paged once the chain has been broken this long (a blip of a second pages nobody).
    watchdog_page_after_s: float = Field(default=10.0, ge=0, le=600)
    # More distinct clients than this whose records one person opened with a reason (no alert of theirs
    # concerned them) within an hour is flagged on the audit page and paged to the supervisors (0: never).
    # How often the monitor looks for silent devices and low batteries (a device is silent after twice its
    # heartbeat interval; a sweep finds it within this much more).
    device_sweep_interval_s: float = Field(default=10.0, gt=0, le=300)
    insider_threshold: int = Field(default=20, ge=0, le=10_000)
    # Video calls: STUN/TURN servers for browsers and devices, as JSON RTCIceServer objects, e.g.
    # [{"urls": ["turn:turn.example.org:3478"]}]. Empty (the default): host candidates only, which suits a
    # closed network and the tests, not calls across NATs.
    ice_servers: list[dict[str, Any]] = Field(default_factory=list)
    # The secret shared with the TURN server (coturn --use-auth-secret --static-auth-secret): each side of
    # each call gets its own TURN credential valid for hours (central.calls.turn), so no long-term TURN
    # password is handed out. Empty: TURN servers are handed on as configured.
    turn_secret: str = ""
    # Where devices reach central, sent in each ring; empty: http://{http_host}:{http_port}.
    public_url: str = ""
    # Origins besides the one a request was sent to (and public_url) that may send state-changing requests
    # and open WebSockets, e.g. ["https://care.example.org"] (central.hardening).
    allowed_origins: list[str] = Field(default_factory=list)
    # The bearer token of /metrics in production (empty there: no /metrics at all); open in development.
    metrics_token: str = ""

    @model_validator(mode="after")
    def _no_default_secrets_in_production(self) -> Settings:
        if self.env == "production":
            if not self.database_url or not self.mqtt_url:
                raise ValueError("production needs CAREALARM_DATABASE_URL and CAREALARM_MQTT_URL")
            if self.metrics_token and len(self.metrics_token) < 32:
                raise ValueError("CAREALARM_METRICS_TOKEN must be 32+ random characters")
        return self

    @model_validator(mode="after")
    def _tls_needs_files(self) -> Settings:
        if self.embedded_mqtt_tls_port and not (self.mqtt_tls_certfile and self.mqtt_tls_keyfile):
            raise ValueError(
                "CAREALARM_EMBEDDED_MQTT_TLS_PORT needs CAREALARM_MQTT_TLS_CERTFILE and _KEYFILE"
            )
        return self

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'carealarm.sqlite3').resolve()}"

    @property
    def broker_dir(self) -> Path:
        return self.data_dir / "broker"
