"""What the web layer is handed: one typed context, built by whoever builds the app (the runner, a test).

:func:`central.app.create_app` keeps it as ``app.state.ctx`` (the only thing on ``app.state``); routes
read it through :data:`central.deps.Ctx`. The ports the roof fills in are :class:`DeviceAccounts` (the
broker's side of a device change), :class:`BrokerSupervisor` (the embedded broker's keeper) and the
command sender (a ``care.commands.Publish``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from care.commands import Publish
from storage.db import SessionFactory

from .auth import FailureLimiter
from .calls.signalling import CallHub, CallsConfig
from .feed import Broadcaster
from .insider import InsiderWatch
from .watchdog import Watchdog

__all__ = ["BrokerSupervisor", "CentralContext", "DeviceAccounts"]


class DeviceAccounts(Protocol):
    """The broker's side of a device change; each call returns once the broker holds it, or raises."""

    def put(self, device_id: str, password: str, *, client_id: str | None) -> None: ...

    def set_password(self, device_id: str, password: str, *, client_id: str | None) -> None: ...

    def revoke(self, device_id: str) -> None: ...


class BrokerSupervisor(Protocol):
    """The keeper of an embedded broker (``carealarm.supervise.Supervisor``): how the broker is doing."""

    @property
    def health(self) -> object: ...


@dataclass
class CentralContext:
    """What the routes need; built once, handed to ``create_app``."""

    sessions: SessionFactory
    broadcaster: Broadcaster
    notify_alerts: Callable[[], None]
    session_hours: float = 14.0
    secure_cookies: bool = False
    limiter: FailureLimiter = field(default_factory=FailureLimiter)
    metrics_sources: list[Callable[[], str]] = field(default_factory=list)
    clock_ms: Callable[[], int] = field(default=lambda: int(time.time() * 1000))
    timezone: str = "Europe/Amsterdam"  # the clients' local time (CAREALARM_TIMEZONE): medication times
    watchdog: Watchdog | None = None  # the chain's health and the probe; None: only this process is judged
    insider: InsiderWatch | None = None  # unusual access to client records, paged to supervisors
    # Video calls: STUN/TURN, the public URL, and the broker rings go out on (read when the app starts).
    calls: CallsConfig = field(default_factory=CallsConfig)
    # Device changes at the broker (the runner gives messaging.accounts.DynsecAccounts); None: no broker.
    device_accounts: DeviceAccounts | None = None
    # The embedded broker's supervisor, when this process runs one.
    broker_supervisor: BrokerSupervisor | None = None
    # Device commands (set_schedule); None: while the app runs, one is connected to ``calls.mqtt``.
    command_sender: Publish | None = None
    # While the app runs: the live calls (started and stopped by create_app's lifespan).
    calls_hub: CallHub | None = field(default=None, init=False)
