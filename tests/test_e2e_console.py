"""End to end: `carealarm run` as a user starts it, a device's alarm, and a nurse in headless Chromium.

Two set-ups: the embedded defaults exactly as `make demo` runs them (SQLite, embedded Mosquitto, simulated
fleet), and production parts (PostgreSQL and the system Mosquitto at 127.0.0.1:1883).
Screenshots of the console are kept in test-artifacts/.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, forget_session, free_port, wait_for

pytestmark = pytest.mark.browser

playwright_api = pytest.importorskip(
    "playwright.sync_api", reason="BROWSER TESTS NOT RUN: playwright missing"
)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not Path(CHROMIUM).exists():
        pytest.skip(
            f"BROWSER TESTS NOT RUN: {CHROMIUM} missing (apt-get install chromium; `make test` does it)"
        )
    ARTIFACTS.mkdir(exist_ok=True)
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


class Service:
    """`carealarm run` in a child process, as a user would start it."""

    def __init__(self, workdir: Path, env: dict[str, str], args: list[str]) -> None:
        self.port = int(env["CAREALARM_HTTP_PORT"])
        self.url = f"http://127.0.0.1:{self.port}"
        self.data_dir = Path(env["CAREALARM_DATA_DIR"])
        self.log_path = workdir / "service.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "carealarm.cli", "run", *args],
            cwd=workdir,
            env={**os.environ, **env},
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        wait_for(self._healthy, 60, interval=0.2, what=f"the service on {self.url} (log: {self.log_path})")

    def _healthy(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"carealarm exited with {self.proc.returncode}:\n{self.log()}")
        try:
            with urllib.request.urlopen(f"{self.url}/livez", timeout=1) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=20)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            self._log.close()
        return code


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        "CAREALARM_DATA_DIR": str(tmp_path / "var"),
        "CAREALARM_HTTP_PORT": str(free_port()),
        "CAREALARM_EMBEDDED_MQTT_PORT": str(free_port()),
        "CAREALARM_POLL_INTERVAL_S": "1.0",
        **extra,
    }


def _sign_in(page: object, service: Service, username: str = "nurse") -> None:
    page.goto(service.url + "/")  # type: ignore[attr-defined]
    page.fill("#username", username)  # type: ignore[attr-defined]
    page.fill("#password", username)  # type: ignore[attr-defined]
    page.click("#login-form button[type=submit]")  # type: ignore[attr-defined]
    page.wait_for_selector("#conn.conn-up", timeout=10_000)  # type: ignore[attr-defined]


def _press_alarm(
    service: Service, mqtt_host: str, mqtt_port: int, device_id: str, msg_id: str, with_credentials: bool
) -> None:
    """A device presses its alarm: mosquitto_pub with the device's own credentials from the fleet file."""
    cmd = [
        "mosquitto_pub",
        "-h",
        mqtt_host,
        "-p",
        str(mqtt_port),
        "-q",
        "1",
        "-t",
        f"carealarm/v1/devices/{device_id}/alarm",
        "-m",
        json.dumps({"msg_id": msg_id, "ts": int(time.time() * 1000), "alarm_kind": "button"}),
    ]
    if with_credentials:
        fleet = {d["device_id"]: d for d in json.loads((service.data_dir / "fleet.json").read_text())}
        # A device's account is tied to its own client id (the broker refuses any other).
        cmd += ["-i", device_id, "-u", device_id, "-P", fleet[device_id]["password"]]
    subprocess.run(cmd, check=True, timeout=10)


def _row(page: object, client_name: str, section: str) -> object:
    return page.locator(f"#{section}-body tr", has_text=client_name)  # type: ignore[attr-defined]


def test_demo_alarm_reaches_the_console_and_is_acknowledged(browser: object, tmp_path: Path) -> None:
    """`carealarm run --demo --simulate` (what `make demo` runs): a simulated alarm appears on the console
    within 30 s without a reload, with client and device; acknowledging moves it out of the open queue;
    an alarm pressed while the page is open appears live too."""
    env = _env(tmp_path)
    service = Service(tmp_path, env, ["--demo", "--simulate", "--alarm-every", "3600"])
    page = browser.new_page(viewport={"width": 1280, "height": 800})  # type: ignore[attr-defined]
    try:
        _sign_in(page, service)
        page.evaluate("window.__noReload = true")
        first = page.locator("#open-body tr").first
        first.wait_for(timeout=30_000)
        text = first.inner_text()
        assert "Alarm pendant" in text and "btn-" in text, text
        assert "CRITICAL" in text
        client_name = first.locator(".client").inner_text()
        page.screenshot(path=str(ARTIFACTS / "console-demo-alarm.png"))

        first.get_by_role("button", name="Acknowledge").click()
        _row(page, client_name, "progress").wait_for(timeout=5_000)
        assert _row(page, client_name, "open").count() == 0
        assert "Anna de Vries" in _row(page, client_name, "progress").inner_text()

        # Another client presses the alarm while the nurse watches: it arrives live.
        other, other_name = ("btn-002", "Piet") if "Piet" not in client_name else ("btn-003", "Wilhelmina")
        _press_alarm(
            service,
            "127.0.0.1",
            int(env["CAREALARM_EMBEDDED_MQTT_PORT"]),
            other,
            "e2e-live-1",
            with_credentials=True,
        )
        # Publishing as the device (its own client id) takes over the simulated device's connection, whose
        # Last Will then raises an offline alert for the same client: the alarm is the critical row.
        _row(page, other_name, "open").filter(has_text="CRITICAL").wait_for(timeout=10_000)
        assert page.evaluate("window.__noReload") is True
        page.screenshot(path=str(ARTIFACTS / "console-demo-live.png"))

        # The first alarm is closed with an outcome and a closing note: it leaves the console.
        taken = _row(page, client_name, "progress")
        taken.get_by_role("button", name="Close alarm…").click()
        page.get_by_label("Reassured — no help needed").check()
        page.fill("#close-note", "Talked to the client through the unit; all well.")
        page.click("#close-submit")
        _row(page, client_name, "progress").wait_for(state="detached", timeout=5_000)
    finally:
        page.close()
        code = service.stop()
    assert code == 0, service.log()


def test_production_parts_postgres_and_system_broker(
    browser: object, tmp_path: Path, pg_url: str, system_broker: object
) -> None:
    """The same slice on PostgreSQL and the system Mosquitto: alarm by mosquitto_pub, acknowledged with
    the keyboard alone, and the acknowledgement is stored."""
    host, port = system_broker.host, system_broker.port  # type: ignore[attr-defined]
    gateway_name = f"e2e-{uuid.uuid4().hex[:8]}"
    env = _env(
        tmp_path,
        CAREALARM_DATABASE_URL=pg_url,
        CAREALARM_MQTT_URL=f"mqtt://{host}:{port}",
        CAREALARM_GATEWAY_NAME=gateway_name,
    )
    service = Service(tmp_path, env, ["--demo"])
    page = browser.new_page(viewport={"width": 1280, "height": 800})  # type: ignore[attr-defined]
    try:
        _sign_in(page, service)
        assert page.locator("#open-body tr").count() == 0
        _press_alarm(service, host, port, "btn-004", f"pg-{gateway_name}", with_credentials=False)
        row = _row(page, "Henk", "open")
        row.wait_for(timeout=10_000)
        page.screenshot(path=str(ARTIFACTS / "console-postgres-alarm.png"))
        page.keyboard.press("ArrowDown")
        page.keyboard.press("a")
        _row(page, "Henk", "progress").wait_for(timeout=5_000)
    finally:
        page.close()
        code = service.stop()
        for role in ("alarms", "bulk"):
            forget_session(system_broker, f"carealarm-gateway-{gateway_name}-{role}")  # type: ignore[arg-type]
    assert code == 0, service.log()
    from sqlalchemy import create_engine, text

    engine = create_engine(pg_url.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.connect() as conn:
        states = conn.execute(
            text("SELECT state, acknowledged_by IS NOT NULL FROM alerts WHERE kind = 'alarm'")
        ).all()
    engine.dispose()
    assert [tuple(s) for s in states] == [("acknowledged", True)]
