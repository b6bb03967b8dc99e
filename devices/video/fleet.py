"""Run the fleet's video devices (kind ``video``) as aiortc endpoints next to the simulated fleet."""

from __future__ import annotations

import asyncio
import logging

from devices.simulator.device import Credentials
from messaging.mqtt import MqttConfig

from .endpoint import EndpointConfig
from .runtime import VideoDevice

__all__ = ["run_video_devices"]

log = logging.getLogger(__name__)


async def run_video_devices(
    fleet: list[Credentials], broker: MqttConfig, central_url: str, stop: asyncio.Event
) -> None:
    """Start an endpoint per video device in ``fleet``; stop them all when ``stop`` is set."""
    devices = [
        VideoDevice(EndpointConfig(c.device_id, c.password, central_url), broker)
        for c in fleet
        if c.kind == "video"
    ]
    for device in devices:
        device.start()
    log.info("simulating %d video devices", len(devices))
    try:
        await stop.wait()
    finally:
        for device in devices:
            await asyncio.to_thread(device.stop)
