"""The command line: helpful --help on every subcommand, and refusal of unsafe production settings."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import free_port
from pydantic import ValidationError

from carealarm.cli import main
from carealarm.settings import Settings

SUBCOMMANDS = [
    ["run"],
    ["gateway"],
    ["monitor"],
    ["central"],
    ["broker"],
    ["simulate"],
    ["db"],
    ["db", "upgrade"],
]


@pytest.mark.parametrize("args", SUBCOMMANDS, ids=lambda a: " ".join(a))
def test_every_subcommand_has_help(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """`carealarm <cmd> --help` explains the command and exits 0."""
    with pytest.raises(SystemExit) as info:
        main([*args, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: carealarm " + " ".join(args))
    assert len(out.splitlines()) >= 3


def test_top_level_help_lists_commands_and_configuration() -> None:
    """The installed entry point lists every command and the configuration variables."""
    out = subprocess.run(
        [sys.executable, "-m", "carealarm.cli", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for word in (
        "run",
        "gateway",
        "monitor",
        "central",
        "simulate",
        "db",
        "CAREALARM_DATABASE_URL",
        "CAREALARM_MQTT_URL",
    ):
        assert word in out


def test_production_refuses_the_embedded_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    """CAREALARM_ENV=production without a database and a broker of its own is a configuration error."""
    monkeypatch.setenv("CAREALARM_ENV", "production")
    with pytest.raises(ValidationError, match="CAREALARM_DATABASE_URL"):
        Settings()


def test_configuration_error_is_reported_not_raised(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bad setting makes the program say what is wrong and exit 2, without a traceback."""
    monkeypatch.setenv("CAREALARM_HTTP_PORT", "not-a-port")
    assert main(["db", "upgrade"]) == 2
    err = capsys.readouterr().err
    assert "configuration error" in err and "http_port" in err


def test_db_upgrade_creates_the_schema(tmp_path: object, monkeypatch: pytest.MonkeyPatch) -> None:
    """`carealarm db upgrade` migrates the embedded SQLite database."""
    monkeypatch.setenv("CAREALARM_DATA_DIR", str(tmp_path))
    assert main(["db", "upgrade"]) == 0
    assert (tmp_path / "carealarm.sqlite3").exists()  # type: ignore[operator]


def _carealarm(*args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "carealarm.cli", *args],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_component_alone_needs_a_migrated_database(tmp_path: Path) -> None:
    """`carealarm gateway` on an empty database says to run `carealarm db upgrade` and exits non-zero."""
    proc = _carealarm(
        "gateway", env={"CAREALARM_DATA_DIR": str(tmp_path), "CAREALARM_MQTT_URL": "mqtt://127.0.0.1:1"}
    )
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode != 0
    assert "carealarm db upgrade" in out


@pytest.mark.parametrize("component", ["gateway", "monitor", "central"])
def test_component_alone_runs_and_stops_cleanly(
    component: str, tmp_path: Path, embedded_broker: object
) -> None:
    """Each component runs alone against a broker and database, and SIGTERM stops it with exit code 0."""
    env = {
        "CAREALARM_DATA_DIR": str(tmp_path),
        "CAREALARM_MQTT_URL": embedded_broker.url,  # type: ignore[attr-defined]
        "CAREALARM_HTTP_PORT": str(free_port()),
        "CAREALARM_GATEWAY_NAME": f"cli-{component}",
    }
    assert main_with_env(["db", "upgrade"], env) == 0
    proc = _carealarm(component, env=env)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if "carealarm: running" in line:
                break
        else:
            raise AssertionError(f"{component} did not start")
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, rest


def main_with_env(args: list[str], env: dict[str, str]) -> int:
    return subprocess.run(
        [sys.executable, "-m", "carealarm.cli", *args],
        env={**os.environ, **env},
        capture_output=True,
        timeout=60,
    ).returncode


def test_policy_command_sets_checked_overrides(tmp_path: Path) -> None:
    """`carealarm policy set` stores organisation and client overrides, refusing values out of range."""
    env = {"CAREALARM_DATA_DIR": str(tmp_path)}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "carealarm.cli", *args],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=60,
        )

    assert run("clients", "add", "--name", "Mevr. Test").returncode == 0
    org = run("policy", "set", "dose_grace_s=3600")
    assert org.returncode == 0 and '"dose_grace_s": 3600' in org.stdout
    client = run("policy", "set", "--client", "1", "dose_grace_s=900")
    assert client.returncode == 0 and '"dose_grace_s": 900' in client.stdout
    assert '"dose_grace_s": 3600' in run("policy", "show").stdout
    refused = run("policy", "set", "dose_grace_s=60")
    assert refused.returncode == 1 and "between 900 and 4500" in refused.stderr
