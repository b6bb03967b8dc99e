"""Helpers for tests that run the service as separate processes and drive a fleet of simulated devices."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from devices.simulator.device import SimDevice

__all__ = ["Component", "DeviceLoop", "get_ok"]


class Component:
    def __init__(self, name: str, env: dict[str, str], logdir: Path) -> None:
        self.name, self.env, self.logdir, self.starts = name, env, logdir, 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        self.starts += 1
        log = open(self.logdir / f"{self.name}-{self.starts}.log", "wb")  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "carealarm.cli", self.name],
            env={**os.environ, **self.env},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return 0 if self.proc is None else int(self.proc.returncode)
        self.proc.send_signal(signal.SIGTERM)
        try:
            return int(self.proc.wait(20))
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return -9


class DeviceLoop:
    """The simulated devices on an asyncio loop of their own (a thread), resending until acknowledged."""

    def __init__(self, devices: list[SimDevice]) -> None:
        self.devices = devices
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._resender: asyncio.Future[None] | None = None

    def start(self) -> None:
        self._thread.start()
        self._resender = asyncio.run_coroutine_threadsafe(self._run(), self.loop)  # type: ignore[assignment]

    async def _run(self) -> None:
        for d in self.devices:
            d.start()
        while True:  # a device resends until the application ack, as protocol v1 requires
            for d in self.devices:
                d.resend_due()
            await asyncio.sleep(0.5)

    def call(self, fn: Callable[[], object]) -> None:
        self.loop.call_soon_threadsafe(fn)

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        if self._resender is not None:
            self._resender.cancel()

        async def close() -> None:
            for d in self.devices:
                await d.stop(graceful=False)

        asyncio.run_coroutine_threadsafe(close(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


def get_ok(url: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=1) as r:
            return bool(r.status == 200)
    except OSError:
        return False
