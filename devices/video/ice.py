"""Loopback ICE for tests and closed labs.

aioice gathers host candidates from every interface *except* 127.0.0.1; a call between a browser and a
device on one machine without a network then has no candidate pair. This swaps aioice's address
discovery for one that returns the loopback address only. Never use it on a real device.
"""

from __future__ import annotations

import aioice.ice

__all__ = ["use_loopback_candidates"]


def _loopback_only(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    return ["127.0.0.1"] if use_ipv4 else []


def use_loopback_candidates() -> None:
    """Make every later aiortc peer connection in this process gather 127.0.0.1 only."""
    aioice.ice.get_host_addresses = _loopback_only
