"""The production deployment file: every part there, no default secrets, health checks and restarts; the
broker's accounts in Mosquitto's dynamic-security plugin, written from the database before it starts."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from carealarm.broker import MAX_QUEUED_BYTES
from messaging.accounts import MAX_PACKET_SIZE

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
BROKER_CONF = ROOT / "deploy" / "mosquitto" / "mosquitto.conf"
SECRETS = {"POSTGRES_PASSWORD", "CAREALARM_MQTT_PASSWORD", "TURN_SECRET"}
# The one-shot that writes the dynamic-security plugin's file from the database before Mosquitto starts.
EXPORT = "broker-export"
ONE_SHOTS = {"migrate", EXPORT}
# Where the eclipse-mosquitto:2 image installs the plugin (its Dockerfile installs it there).
IMAGE_PLUGIN = "/usr/lib/mosquitto_dynamic_security.so"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return dict(yaml.safe_load(COMPOSE.read_text()))


def test_every_part_of_the_production_design_is_there(compose: dict[str, Any]) -> None:
    """Mosquitto, PostgreSQL, two gateways, two monitors, one central and coturn."""
    services = compose["services"]
    assert {
        "mosquitto",
        "postgres",
        "migrate",
        EXPORT,
        "gateway-1",
        "gateway-2",
        "monitor-1",
        "monitor-2",
        "central",
        "coturn",
    } <= set(services)
    assert services["mosquitto"]["image"].startswith("eclipse-mosquitto:2")


def test_gateways_share_one_subscription_with_their_own_sessions(compose: dict[str, Any]) -> None:
    """Both gateways use the same share group and distinct names (their persistent sessions)."""
    envs = [compose["services"][g]["environment"] for g in ("gateway-1", "gateway-2")]
    assert envs[0]["CAREALARM_GATEWAY_SHARE_GROUP"] == envs[1]["CAREALARM_GATEWAY_SHARE_GROUP"] != ""
    assert envs[0]["CAREALARM_GATEWAY_NAME"] != envs[1]["CAREALARM_GATEWAY_NAME"]


def test_long_running_services_restart_and_are_health_checked(compose: dict[str, Any]) -> None:
    """Every long-running service restarts by itself; the carealarm ones and PostgreSQL have health checks."""
    for name, service in compose["services"].items():
        if name in ONE_SHOTS:
            assert service["restart"] == "no", name
            continue
        assert service.get("restart") == "unless-stopped", name
    for name in ("postgres", "central", "gateway-1", "gateway-2", "monitor-1", "monitor-2"):
        assert "healthcheck" in compose["services"][name], name


def test_secrets_have_no_defaults(compose: dict[str, Any]) -> None:
    """Each secret is required from the environment (${VAR:?...}), never given a default."""
    text = COMPOSE.read_text()
    for secret in SECRETS:
        uses = re.findall(r"\$\{" + secret + r"([^}]*)\}", text)
        assert uses, secret
        assert all(not u.startswith(":-") and not u.startswith("-") for u in uses), secret
        assert any(u.startswith(":?") for u in uses), secret
    assert compose["x-carealarm"]["environment"]["CAREALARM_ENV"] == "production"


def broker_directives() -> dict[str, list[str]]:
    """deploy/mosquitto/mosquitto.conf as directive -> its values, in order (comments left out)."""
    directives: dict[str, list[str]] = {}
    for line in BROKER_CONF.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.strip().partition(" ")
            directives.setdefault(name, []).append(value.strip())
    return directives


def test_production_broker_uses_the_dynamic_security_plugin() -> None:
    """The production Mosquitto takes its accounts from the plugin (each device tied to its client id), with
    its file on the writable data volume; no password file or ACL file, which would also let users in."""
    conf = broker_directives()
    assert conf["plugin"] == [IMAGE_PLUGIN]
    (plugin_file,) = conf["plugin_opt_config_file"]
    assert plugin_file == "/mosquitto/data/dynamic-security.json"
    assert conf["allow_anonymous"] == ["false"]
    assert conf["per_listener_settings"] == ["false"]  # the plugin and its limits hold on every listener
    assert "password_file" not in conf and "acl_file" not in conf


def test_production_broker_has_the_embedded_brokers_limits_and_persists() -> None:
    """The same packet and queue limits as the embedded broker, unlimited queued counts, persistence."""
    conf = broker_directives()
    assert conf["max_packet_size"] == [str(MAX_PACKET_SIZE)]
    assert conf["max_queued_bytes"] == [str(MAX_QUEUED_BYTES)]
    assert conf["max_queued_messages"] == ["0"]
    assert conf["persistence"] == ["true"]
    assert conf["persistence_location"] == ["/mosquitto/data/"]


def test_mosquitto_starts_only_after_the_plugin_file_is_written(compose: dict[str, Any]) -> None:
    """broker-export runs after the migration and writes the plugin's file into the volume Mosquitto keeps
    its data in; Mosquitto starts only once it has succeeded."""
    services = compose["services"]
    export, mosquitto = services[EXPORT], services["mosquitto"]
    assert mosquitto["depends_on"][EXPORT] == {"condition": "service_completed_successfully"}
    assert export["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}
    assert "carealarm broker-export" in " ".join(export["command"])
    assert "mosquitto-data:/mosquitto/data" in export["volumes"]
    assert "mosquitto-data:/mosquitto/data" in mosquitto["volumes"]
    # The file lands where the broker's configuration looks for it, owned by the broker's user (uid 1883).
    script = " ".join(export["command"])
    assert broker_directives()["plugin_opt_config_file"][0] in script
    assert "1883:1883" in script


def test_the_export_runs_with_the_services_database_and_broker_account(compose: dict[str, Any]) -> None:
    """broker-export has the environment every carealarm service has: its database, and CAREALARM_MQTT_URL
    built from CAREALARM_MQTT_PASSWORD, whose password the exported service account gets."""
    export = compose["services"][EXPORT]
    assert export["image"] == compose["x-carealarm"]["image"]
    assert export["environment"] == compose["x-carealarm"]["environment"]
    assert "${CAREALARM_MQTT_PASSWORD" in export["environment"]["CAREALARM_MQTT_URL"]


def _compose_command() -> list[str]:
    """`docker compose` or `docker-compose`; the test is skipped, loudly, where neither exists."""
    if shutil.which("docker") is None:
        pytest.skip("NO DOCKER CLIENT: `docker compose config` was not run (the YAML checks above ran)")
    if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    pytest.skip("DOCKER COMPOSE NOT INSTALLED: `make test` installs docker-compose where docker exists")


def _compose_env() -> dict[str, str]:
    return {
        **os.environ,
        **{secret: secret.lower().replace("_", "") + "0" * 16 for secret in SECRETS},
        "CAREALARM_PUBLIC_URL": "https://care.example.org",
        "TURN_HOST": "turn.example.org",
    }


def test_docker_compose_accepts_the_file() -> None:
    """`docker compose config` (or docker-compose) validates the file where a docker client exists."""
    command = _compose_command()
    env = _compose_env()
    done = subprocess.run(
        [*command, "-f", str(COMPOSE), "config", "--quiet"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    missing = subprocess.run(
        [*command, "-f", str(COMPOSE), "config", "--quiet"],
        env={k: v for k, v in env.items() if k != "CAREALARM_MQTT_PASSWORD"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert missing.returncode != 0 and "CAREALARM_MQTT_PASSWORD" in missing.stderr


def test_docker_compose_gives_the_export_the_service_password() -> None:
    """As Compose resolves it, broker-export connects as the service account with CAREALARM_MQTT_PASSWORD
    (the password it writes into the plugin's file), and Mosquitto waits for it to succeed."""
    env = _compose_env()
    done = subprocess.run(
        [*_compose_command(), "-f", str(COMPOSE), "config"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    services = yaml.safe_load(done.stdout)["services"]
    password = env["CAREALARM_MQTT_PASSWORD"]
    assert (
        services[EXPORT]["environment"]["CAREALARM_MQTT_URL"] == f"mqtt://carealarm:{password}@mosquitto:1883"
    )
    assert services["mosquitto"]["depends_on"][EXPORT]["condition"] == "service_completed_successfully"
