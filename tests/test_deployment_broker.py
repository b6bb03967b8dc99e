"""The production broker configuration on a real Mosquitto: deploy/mosquitto/mosquitto.conf, changed only in
its paths and port, with the plugin file `carealarm broker-export` writes, as Compose's broker-export does.

Each device is tied to its own client id there: a device cannot take the gateway's session nor another
device's (which would kick it off), and the service account gets in with CAREALARM_MQTT_URL's password.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import free_port, wait_for

from carealarm.broker import dynsec_plugin
from messaging.accounts import verify_mosquitto_hash
from messaging.mqtt import MqttConfig, make_client
from storage.db import make_engine, make_session_factory, upgrade
from storage.registry import add_client, add_device

ROOT = Path(__file__).resolve().parent.parent
BROKER_CONF = ROOT / "deploy" / "mosquitto" / "mosquitto.conf"
NOW = 1_800_000_000_000
SERVICE_PASSWORD = "0123456789abcdef" * 3  # hex, as deploy/README.md has it made
GATEWAY_CLIENT_ID = "carealarm-gateway-gw1-alarms"  # gateway/service.py: carealarm-gateway-{name}-{role}


@dataclass(frozen=True)
class Broker:
    port: int
    log: Path


def production_config(tmp_path: Path, port: int, data: Path) -> Path:
    """deploy/mosquitto/mosquitto.conf with this machine's paths: the listener's port, the plugin's path,
    the plugin's file and the persistence directory. Every other line is the production one."""
    plugin = dynsec_plugin()
    assert plugin is not None
    replace = {
        "listener": f"listener {port} 127.0.0.1",  # the plain listener only; the TLS one is commented out
        "plugin": f"plugin {plugin}",
        "plugin_opt_config_file": f"plugin_opt_config_file {data / 'dynamic-security.json'}",
        "persistence_location": f"persistence_location {data}/",
    }
    seen: set[str] = set()
    lines = []
    for line in BROKER_CONF.read_text().splitlines():
        name = line.split(" ", 1)[0]
        if name in replace:
            assert name not in seen, f"{name} twice in {BROKER_CONF}"
            seen.add(name)
            line = replace[name]
        lines.append(line)
    assert seen == set(replace), f"{BROKER_CONF} lacks {sorted(set(replace) - seen)}"
    if os.geteuid() == 0:
        # Started as root, Mosquitto switches to the 'mosquitto' user, who cannot enter pytest's private
        # temporary directory (in the image the files are that user's: uid 1883 owns the volume).
        lines.append("user root")
    conf = tmp_path / "mosquitto.conf"
    conf.write_text("\n".join(lines) + "\n")
    return conf


def seed(tmp_path: Path) -> str:
    """A migrated database (Compose's `migrate`) with one client, a button and a video tablet; its URL."""
    url = f"sqlite:///{tmp_path / 'carealarm.sqlite3'}"
    upgrade(url)
    engine = make_engine(url)
    try:
        with make_session_factory(engine).begin() as session:
            client = add_client(session, name="Mevr. Productie", now_ms=NOW)
            add_device(
                session,
                device_id="btn-1",
                client_id=client.id,
                kind="alarm_button",
                now_ms=NOW,
                password="btn-pw",
            )
            add_device(
                session, device_id="tab-1", client_id=client.id, kind="video", now_ms=NOW, password="tab-pw"
            )
    finally:
        engine.dispose()
    return url


def export_env(tmp_path: Path, url: str) -> dict[str, str]:
    """The environment Compose gives broker-export (x-carealarm's), with this test's database."""
    return {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "CAREALARM_ENV": "production",
        "CAREALARM_DATA_DIR": str(tmp_path / "var"),
        "CAREALARM_DATABASE_URL": url,
        "CAREALARM_MQTT_URL": f"mqtt://carealarm:{SERVICE_PASSWORD}@mosquitto:1883",
    }


def export(tmp_path: Path, data: Path) -> subprocess.CompletedProcess[str]:
    """`carealarm broker-export` as Compose's one-shot runs it: production, the service's broker URL."""
    return subprocess.run(
        [sys.executable, "-m", "carealarm.cli", "broker-export", "--dir", str(data)],
        env=export_env(tmp_path, seed(tmp_path)),
        capture_output=True,
        text=True,
        timeout=60,
    )


def connects(port: int, username: str | None, password: str | None, client_id: str) -> bool:
    """Connect once; True if the broker accepted (paho's loop in this thread, nothing left behind)."""
    client, _ = make_client(MqttConfig("127.0.0.1", port, username, password), client_id)
    answers: list[Any] = []
    client.on_connect = lambda _c, _u, _f, reason, _p: answers.append(reason)
    try:
        client.connect("127.0.0.1", port, keepalive=30)
    except OSError:
        return False
    deadline = time.monotonic() + 5
    while not answers and time.monotonic() < deadline and client.socket() is not None:
        client.loop(timeout=0.05)
    client.disconnect()
    leftover = client.socket()
    if leftover is not None:
        leftover.close()
    return bool(answers) and not answers[0].is_failure


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    """A Mosquitto with the production configuration and the exported accounts, on a free port; stopped."""
    if shutil.which("mosquitto") is None or dynsec_plugin() is None:
        pytest.skip("NO MOSQUITTO WITH ITS DYNAMIC-SECURITY PLUGIN: the production broker was not started")
    data = tmp_path / "data"
    data.mkdir()
    exported = export(tmp_path, data)
    assert exported.returncode == 0, exported.stderr
    port = free_port()
    log = tmp_path / "mosquitto.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            ["mosquitto", "-c", str(production_config(tmp_path, port, data))], stdout=out, stderr=out
        )
    try:
        wait_for(
            lambda: process.poll() is not None or connects(port, "carealarm", SERVICE_PASSWORD, "probe"),
            10,
            what=f"the production broker on {port} (log: {log})",
        )
        assert process.poll() is None, log.read_text()
        yield Broker(port, log)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_service_account_gets_in_with_the_exported_password(broker: Broker) -> None:
    """The service account connects with CAREALARM_MQTT_URL's password, as the gateway does; no other."""
    assert connects(broker.port, "carealarm", SERVICE_PASSWORD, GATEWAY_CLIENT_ID)
    assert not connects(broker.port, "carealarm", "not-the-password", GATEWAY_CLIENT_ID)


def test_a_device_connects_with_its_own_client_id(broker: Broker) -> None:
    """The button and the tablet (both its logins) get in as themselves; nobody gets in anonymously."""
    assert connects(broker.port, "btn-1", "btn-pw", "btn-1")
    assert connects(broker.port, "tab-1", "tab-pw", "tab-1")
    assert connects(broker.port, "tab-1/video", "tab-pw", "tab-1/video")
    assert not connects(broker.port, None, None, "anonymous-1")


def test_a_device_cannot_take_the_gateways_or_another_devices_client_id(broker: Broker) -> None:
    """A tablet with its right password is refused with the gateway's client id (which would kick the
    gateway off) and with the button's; the button's own id stays the button's."""
    assert not connects(broker.port, "tab-1", "tab-pw", GATEWAY_CLIENT_ID)
    assert not connects(broker.port, "tab-1", "tab-pw", "btn-1")
    assert not connects(broker.port, "tab-1/video", "tab-pw", GATEWAY_CLIENT_ID)
    assert not connects(broker.port, "btn-1", "btn-pw", "tab-1")


def test_the_compose_one_shot_installs_the_file_for_the_broker(tmp_path: Path) -> None:
    """docker-compose.yml's broker-export script, its paths moved into a temporary directory, leaves the
    plugin's file owned by the broker's uid (1883) with mode 0600, the data directory the broker's, and the
    service account's password the one of CAREALARM_MQTT_URL."""
    if os.geteuid() != 0:
        pytest.skip("NOT ROOT: the one-shot's chown to uid 1883 needs root, as in its container")
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    shell, flags, script = compose["services"]["broker-export"]["command"]
    data, scratch = tmp_path / "data", tmp_path / "dynsec"
    data.mkdir()
    script = script.replace("/tmp/dynsec", str(scratch)).replace("/mosquitto/data", str(data))
    done = subprocess.run(
        [shell, flags, script],
        env=export_env(tmp_path, seed(tmp_path)),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    plugin_file = data / "dynamic-security.json"
    info = plugin_file.stat()
    assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (1883, 1883, 0o600)
    assert (data.stat().st_uid, data.stat().st_gid) == (1883, 1883)
    assert sorted(p.name for p in data.iterdir()) == ["dynamic-security.json"]
    clients = {c["username"]: c for c in json.loads(plugin_file.read_text())["clients"]}
    assert set(clients) == {"carealarm", "btn-1", "tab-1", "tab-1/video"}
    service = clients["carealarm"]
    service_hash = f"$7${service['iterations']}${service['salt']}${service['password']}"
    assert verify_mosquitto_hash(SERVICE_PASSWORD, service_hash)
