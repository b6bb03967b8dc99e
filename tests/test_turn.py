"""Short-lived TURN credentials (central.calls.turn) against a real coturn with ``use-auth-secret``: a fresh
credential gets a relay allocation, an expired one or one made with another secret is refused 401; a TURN
server configured with a credential of its own keeps it, and without a secret nothing is added."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import aioice.turn
import pytest
from helpers import free_port, wait_for

from central.calls.turn import TURN_TTL_S, turn_credential, with_turn_credentials

SECRET = "turn-shared-secret-for-tests"
TURNSERVER = shutil.which("turnserver") or "/usr/bin/turnserver"


@pytest.fixture(scope="module")
def coturn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    if not Path(TURNSERVER).exists():
        pytest.skip(
            f"TURN TESTS NOT RUN: {TURNSERVER} missing (apt-get install coturn; make test installs it)"
        )
    work = tmp_path_factory.mktemp("coturn")
    port = free_port()
    relay = free_port()
    proc = subprocess.Popen(
        [
            TURNSERVER,
            "-n",
            "--listening-ip=127.0.0.1",
            "--relay-ip=127.0.0.1",
            f"--listening-port={port}",
            "--use-auth-secret",
            f"--static-auth-secret={SECRET}",
            "--realm=carealarm",
            "--no-cli",
            "--no-tls",
            "--no-dtls",
            "--fingerprint",
            f"--userdb={work / 'turndb'}",
            f"--pidfile={work / 'pid'}",
            f"--min-port={relay}",
            f"--max-port={relay + 20}",
            "--log-file=stdout",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_for(
            lambda: _allocates(port, *turn_credential(SECRET, "probe", int(time.time()))), 10, what="coturn"
        )
        yield port
    finally:
        proc.terminate()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()


def _allocates(port: int, username: str, password: str) -> bool:
    async def allocate() -> bool:
        try:
            transport, _ = await asyncio.wait_for(
                aioice.turn.create_turn_endpoint(
                    asyncio.DatagramProtocol,
                    server_addr=("127.0.0.1", port),
                    username=username,
                    password=password,
                    transport="udp",
                ),
                3,
            )
        except Exception:
            return False
        transport.close()
        return True

    return asyncio.run(allocate())


def test_a_fresh_credential_gets_a_relay_and_an_expired_or_forged_one_does_not(coturn: int) -> None:
    now = int(time.time())
    assert _allocates(coturn, *turn_credential(SECRET, "nurse-7", now))
    assert not _allocates(coturn, *turn_credential(SECRET, "nurse-7", now - TURN_TTL_S - 60))
    assert not _allocates(coturn, *turn_credential("another secret", "nurse-7", now))


def test_each_turn_server_without_a_credential_gets_one_for_this_side() -> None:
    servers = [
        {"urls": ["stun:turn.example.org:3478"]},
        {"urls": ["turn:turn.example.org:3478?transport=udp", "turn:turn.example.org:3478?transport=tcp"]},
        {"urls": "turns:other.example.org:5349", "username": "fixed", "credential": "kept"},
    ]
    handed = with_turn_credentials(servers, SECRET, "device:tv-1", 1_800_000_000, ttl_s=600)
    assert "username" not in handed[0]
    assert handed[1]["username"] == "1800000600:device_tv-1"
    assert (handed[1]["username"], handed[1]["credential"]) == turn_credential(
        SECRET, "device:tv-1", 1_800_000_000, 600
    )
    assert (handed[2]["username"], handed[2]["credential"]) == ("fixed", "kept")
    assert with_turn_credentials(servers, "", "x", 0) == servers and "username" not in servers[1]
