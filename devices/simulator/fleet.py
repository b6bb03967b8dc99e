"""A small fleet of simulated devices with a repeatable (seeded) behaviour, for the demo and the tests.

Scenario ``demo``: every device sends heartbeats; one alarm button is pressed a few seconds after the start
(so a newcomer sees an alarm on the console at once) and then, across the fleet, about one alarm every
``alarm_every_s`` seconds; dispensers report doses due and taken, and now and then a missed one.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from dataclasses import dataclass
from pathlib import Path

from carealarm.mqtt import MqttConfig

from .device import Credentials, SimDevice

__all__ = ["FleetStats", "load_fleet", "run_fleet", "save_fleet"]

log = logging.getLogger(__name__)


@dataclass
class FleetStats:
    alarms: int = 0
    acked: int = 0
    doses: int = 0
    heartbeats: int = 0


def save_fleet(path: Path, creds: list[Credentials]) -> None:
    """Write device credentials for the simulator (mode 0600; as a provisioning export would be)."""
    import os

    path.parent.mkdir(parents=True, exist_ok=True)
    body = json.dumps([c.__dict__ for c in creds], indent=1)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(body)


def load_fleet(path: Path) -> list[Credentials]:
    return [Credentials(**item) for item in json.loads(path.read_text())]


async def run_fleet(
    creds: list[Credentials],
    broker: MqttConfig,
    stop: asyncio.Event,
    *,
    seed: int = 1,
    heartbeat_s: float = 30.0,
    alarm_every_s: float = 60.0,
    first_alarm_after_s: float = 5.0,
    stats: FleetStats | None = None,
) -> FleetStats:
    """Run the fleet until ``stop`` is set."""
    rng = random.Random(seed)
    stats = stats or FleetStats()

    def acked(_msg_id: str, _seconds: float) -> None:
        stats.acked += 1

    devices = [SimDevice(c, broker, on_acked=acked) for c in creds]
    for device in devices:
        device.start()
    buttons = [d for d in devices if d.creds.kind == "alarm_button"]
    dispensers = [d for d in devices if d.creds.kind == "dispenser"]
    log.info(
        "simulator: %d devices (%d alarm buttons, %d dispensers)", len(devices), len(buttons), len(dispensers)
    )
    start = time.monotonic()
    next_heartbeat = {d.creds.device_id: start + rng.uniform(0.5, 3.0) for d in devices}
    next_alarm = start + first_alarm_after_s
    next_dose = start + rng.uniform(10, 30)
    dose_seq = 0
    try:
        while not stop.is_set():
            now = time.monotonic()
            for d in devices:
                if now >= next_heartbeat[d.creds.device_id]:
                    d.heartbeat(battery=rng.randint(40, 100), interval_s=int(heartbeat_s))
                    stats.heartbeats += 1
                    next_heartbeat[d.creds.device_id] = now + heartbeat_s * rng.uniform(0.9, 1.1)
                d.resend_due(now)
            if buttons and now >= next_alarm:
                button = rng.choice(buttons)
                msg_id = button.press_alarm(rng.choice(["button", "button", "pendant", "fall"]))
                stats.alarms += 1
                log.info(
                    "simulator: %s (%s) pressed the alarm (%s)",
                    button.creds.device_id,
                    button.creds.client_name,
                    msg_id,
                )
                next_alarm = now + rng.expovariate(1.0 / alarm_every_s)
            if dispensers and now >= next_dose:
                d = rng.choice(dispensers)
                dose_seq += 1
                dose_id = f"dose-{dose_seq}"
                d.dose_event("due", dose_id)
                d.dose_event("missed" if rng.random() < 0.2 else "taken", dose_id)
                stats.doses += 1
                next_dose = now + rng.uniform(20, 60)
            try:
                await asyncio.wait_for(stop.wait(), timeout=0.25)
            except TimeoutError:
                pass
    finally:
        for d in devices:
            d.stop()
    return stats
