"""Provisioning that cannot lock anyone out, on a real Mosquitto with its dynamic-security plugin.

A device provisioned, rotated or removed through the admin API or the command line holds at the broker as
soon as the call returns, also when the components run as separate processes; a restart of
``carealarm run --demo`` never issues new passwords; a device may only use its own client id; the broker
refuses oversized packets.
"""

from __future__ import annotations

import http.cookiejar
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from helpers import MqttProbe, free_port, service_config, wait_for

from carealarm.broker import EmbeddedBroker, dynsec_plugin
from central.app import CentralContext, create_app
from central.auth import hash_password
from central.feed import Broadcaster
from messaging.accounts import DynsecAccounts, mosquitto_hash
from messaging.mqtt import MqttConfig, make_client
from storage.db import SessionFactory
from storage.models import Device, DeviceEvent
from storage.registry import add_client, add_user

NOW = 1_800_000_000_000


class DeviceLink:
    """A device's own MQTT connection (paho, reconnecting by itself) that counts what the broker said."""

    def __init__(self, port: int, device_id: str, password: str, client_id: str | None = None) -> None:
        self.accepted = 0
        self.refused: list[str] = []
        self.disconnects = 0
        self._lock = threading.Lock()
        self.client, props = make_client(
            MqttConfig("127.0.0.1", port, device_id, password), client_id or device_id, persistent=True
        )
        self.client.reconnect_delay_set(min_delay=1, max_delay=2)

        def on_connect(_c: object, _u: object, _f: object, reason: Any, _p: object) -> None:
            with self._lock:
                if reason.is_failure:
                    self.refused.append(str(reason))
                else:
                    self.accepted += 1

        def on_disconnect(*_args: object) -> None:
            with self._lock:
                self.disconnects += 1

        self.client.on_connect = on_connect
        self.client.on_disconnect = on_disconnect
        self.client.connect_async("127.0.0.1", port, keepalive=30, clean_start=False, properties=props)
        self.client.loop_start()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _device_probe(port: int, device_id: str, password: str, client_id: str | None = None) -> bool:
    """Connect once as the device (its id as client id unless told otherwise); True if the broker accepted.

    paho's own loop in this thread: no loop thread and socket pair left behind by a refused connection.
    """
    client, _ = make_client(MqttConfig("127.0.0.1", port, device_id, password), client_id or device_id)
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
def api(sessions: SessionFactory, embedded_broker: EmbeddedBroker) -> Iterator[TestClient]:
    """Central's API in this process, an admin signed in, device changes going to the embedded broker."""
    with sessions.begin() as s:
        add_user(
            s,
            username="adm",
            display_name="Adm",
            role="admin",
            password_hash=hash_password("adm-pw-123"),
            now_ms=NOW,
        )
        add_client(s, name="Mevr. Jansen", now_ms=NOW)
    broadcaster = Broadcaster(sessions, poll_interval_s=0.1)
    accounts = DynsecAccounts(service_config(embedded_broker))
    ctx = CentralContext(sessions, broadcaster, broadcaster.wake, clock_ms=lambda: NOW)
    ctx.device_accounts = accounts
    app = create_app(ctx)
    with TestClient(app) as client:
        assert (
            client.post("/api/session", json={"username": "adm", "password": "adm-pw-123"}).status_code == 200
        )
        yield client


def _provision(api: TestClient, device_id: str, kind: str = "alarm_button") -> str:
    client_id = api.get("/api/manage/clients").json()[0]["id"]
    response = api.post(
        "/api/manage/devices", json={"device_id": device_id, "client_id": client_id, "kind": kind}
    )
    assert response.status_code == 201, response.text
    return str(response.json()["password"])


# -- components apart ----------------------------------------------------------------------------------


def _cli(env: dict[str, str], *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "carealarm.cli", *args],
        env={**os.environ, **env},
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _start(env: dict[str, str], logfile: Path, *args: str) -> subprocess.Popen[bytes]:
    with open(logfile, "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "carealarm.cli", *args],
            env={**os.environ, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def _stop(proc: subprocess.Popen[bytes]) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()


def _http_up(url: str) -> bool:
    """True when an HTTP server answers at ``url``, whatever it answers."""
    try:
        with urllib.request.urlopen(url, timeout=1):
            return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


def test_api_provisioning_holds_at_once_with_the_components_apart(tmp_path: Path) -> None:
    """`carealarm broker` and `carealarm central` as separate processes: a device provisioned through the
    admin API connects with the returned password at the first attempt, right after the answer."""
    http_port, mqtt_port = free_port(), free_port()
    env = {
        "CAREALARM_DATA_DIR": str(tmp_path / "var"),
        "CAREALARM_EMBEDDED_MQTT_PORT": str(mqtt_port),
        "CAREALARM_HTTP_PORT": str(http_port),
    }
    assert (
        _cli(
            env,
            "users",
            "add",
            "adm",
            "--name",
            "Adm",
            "--role",
            "admin",
            "--password-stdin",
            stdin="quiet-harbour-lantern-7\n",
        ).returncode
        == 0
    )
    assert _cli(env, "clients", "add", "--name", "Mevr. Apart").returncode == 0
    broker = _start(env, tmp_path / "broker.log", "broker")
    central = _start(env, tmp_path / "central.log", "central")
    try:
        wait_for(lambda: _http_up(f"http://127.0.0.1:{http_port}/healthz"), 60, what="central")
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))

        def call(method: str, path: str, body: object) -> dict[str, Any]:
            request = urllib.request.Request(
                f"http://127.0.0.1:{http_port}{path}",
                data=json.dumps(body).encode(),
                method=method,
                headers={"Content-Type": "application/json"},
            )
            with opener.open(request, timeout=30) as response:
                return dict(json.loads(response.read()))

        call("POST", "/api/session", {"username": "adm", "password": "quiet-harbour-lantern-7"})
        device = call(
            "POST", "/api/manage/devices", {"device_id": "btn-apart", "client_id": 1, "kind": "alarm_button"}
        )
        answered = time.monotonic()
        probe = MqttProbe(
            MqttConfig("127.0.0.1", mqtt_port, "btn-apart", str(device["password"])), client_id="btn-apart"
        )
        try:
            assert probe.connected(), f"CONNACK {probe.connect_reason}; the API said {device}"
            took = time.monotonic() - answered
        finally:
            probe.close()
        assert device["broker_updated"] is True, device
        assert took < 1.0, f"CONNACK {took:.3f} s after the API answered"
    finally:
        assert _stop(central) == 0, (tmp_path / "central.log").read_text()[-3000:]
        _stop(broker)


# -- rotate, remove, client ids ------------------------------------------------------------------------


def test_rotation_refuses_the_old_password_at_once(api: TestClient, embedded_broker: EmbeddedBroker) -> None:
    """After POST …/rotate the connected device is disconnected, its old password is refused and the new one
    accepted, without waiting and without a broker restart."""
    old = _provision(api, "btn-rot")
    link = DeviceLink(embedded_broker.port, "btn-rot", old)
    try:
        wait_for(lambda: link.accepted == 1, 5, what="the device's first connection")
        response = api.post("/api/manage/devices/btn-rot/rotate")
        assert response.status_code == 200, response.text
        rotated = response.json()
        assert rotated["broker_updated"] is True and rotated["password"] != old
        assert not _device_probe(embedded_broker.port, "btn-rot", old)
        assert _device_probe(embedded_broker.port, "btn-rot", str(rotated["password"]))
        wait_for(lambda: link.disconnects >= 1, 5, what="the connected device to be disconnected")
        wait_for(
            lambda: link.refused, 5, what="the device's reconnection with the old password to be refused"
        )
        assert link.accepted == 1
    finally:
        link.close()


def test_removal_kicks_the_device_refuses_it_and_keeps_its_history(
    api: TestClient, embedded_broker: EmbeddedBroker, sessions: SessionFactory
) -> None:
    """DELETE /api/manage/devices/{id}: a connected device is disconnected at once and refused from then on;
    its device row and its events are still there, marked decommissioned."""
    password = _provision(api, "btn-gone")
    with sessions.begin() as s:
        s.add(
            DeviceEvent(
                device_id="btn-gone",
                msg_id="m1",
                kind="alarm",
                device_ts_ms=NOW,
                received_ms=NOW,
                payload="{}",
            )
        )
    link = DeviceLink(embedded_broker.port, "btn-gone", password)
    try:
        wait_for(lambda: link.accepted == 1, 5, what="the device's first connection")
        response = api.delete("/api/manage/devices/btn-gone")
        assert response.status_code == 200, response.text
        removed = response.json()
        assert removed["broker_updated"] is True and removed["decommissioned_ms"] == NOW
        wait_for(lambda: link.disconnects >= 1, 5, what="the connected device to be disconnected")
        assert not _device_probe(embedded_broker.port, "btn-gone", password)
        wait_for(lambda: link.refused, 5, what="the device's reconnection to be refused")
    finally:
        link.close()
    with sessions() as s:
        device = s.get(Device, "btn-gone")
        assert device is not None and device.decommissioned_ms == NOW and device.mqtt_password_hash == ""
        assert [e.msg_id for e in s.query(DeviceEvent).filter_by(device_id="btn-gone")] == ["m1"]
    # The broker's next start (from the database) refuses it too.
    with sessions() as s:
        from storage.registry import broker_accounts

        embedded_broker.reload(broker_accounts(s))
    assert not _device_probe(embedded_broker.port, "btn-gone", password)


def test_changes_after_a_removal_still_hold(api: TestClient, embedded_broker: EmbeddedBroker) -> None:
    """After a removal the broker takes the next provisioning, rotation and removal (Mosquitto 2.0.11 crashes
    at the next change when a role still held by a client is deleted; a removal must not do that)."""
    _provision(api, "btn-a")
    assert api.delete("/api/manage/devices/btn-a").status_code == 200
    password = _provision(api, "btn-b")
    assert api.post("/api/manage/devices/btn-b/rotate").json()["broker_updated"] is True
    assert api.delete("/api/manage/devices/btn-b").json()["broker_updated"] is True
    password = _provision(api, "btn-c")
    assert _device_probe(embedded_broker.port, "btn-c", password)
    assert embedded_broker.process is not None and embedded_broker.process.poll() is None


def test_a_device_may_use_only_its_own_client_id(api: TestClient, embedded_broker: EmbeddedBroker) -> None:
    """With its own password a device is refused under another device's client id, a service client id
    (carealarm-…) or any other id, and the device that owns the id stays connected."""
    one = _provision(api, "btn-one")
    two = _provision(api, "btn-two")
    owner = DeviceLink(embedded_broker.port, "btn-two", two)
    try:
        wait_for(lambda: owner.accepted == 1, 5, what="btn-two's connection")
        for client_id in (
            "btn-two",
            "carealarm-gateway-gw1-alarms",
            "carealarm-hints-0123456789",
            "btn-one-x",
        ):
            assert not _device_probe(embedded_broker.port, "btn-one", one, client_id=client_id), client_id
        assert _device_probe(embedded_broker.port, "btn-one", one, client_id="btn-one")
        time.sleep(0.3)
        assert (owner.accepted, owner.disconnects) == (1, 0)
    finally:
        owner.close()


def test_cli_rotate_and_remove_hold_at_an_external_broker(
    embedded_broker: EmbeddedBroker, tmp_path: Path
) -> None:
    """`carealarm devices add|rotate|remove` with CAREALARM_MQTT_URL (a broker carealarm did not start, with
    the plugin): each change holds when the command returns."""
    env = {"CAREALARM_DATA_DIR": str(tmp_path / "var"), "CAREALARM_MQTT_URL": embedded_broker.url}
    assert _cli(env, "clients", "add", "--name", "Dhr. Extern").returncode == 0
    added = _cli(env, "devices", "add", "med-ext", "--client", "1", "--kind", "dispenser")
    assert added.returncode == 0, added.stderr
    first = next(line.split()[2] for line in added.stdout.splitlines() if line.startswith("MQTT password:"))
    assert _device_probe(embedded_broker.port, "med-ext", first), added.stdout
    assert "the broker lets med-ext in now" in added.stdout
    rotated = _cli(env, "devices", "rotate", "med-ext")
    assert rotated.returncode == 0 and "refuses the old password" in rotated.stdout, rotated.stderr
    second = rotated.stdout.split("new MQTT password ")[1].split()[0]
    assert not _device_probe(embedded_broker.port, "med-ext", first)
    assert _device_probe(embedded_broker.port, "med-ext", second)
    removed = _cli(env, "devices", "remove", "med-ext")
    assert removed.returncode == 0 and "refuses med-ext from now on" in removed.stdout, removed.stderr
    assert not _device_probe(embedded_broker.port, "med-ext", second)


def test_cli_says_so_when_an_external_broker_was_not_told(tmp_path: Path) -> None:
    """With an external broker that cannot be reached, `devices remove` fails (exit 3) and says the device
    can still connect and what to run again; the removal is in the database all the same."""
    env = {
        "CAREALARM_DATA_DIR": str(tmp_path / "var"),
        "CAREALARM_MQTT_URL": f"mqtt://carealarm:x@127.0.0.1:{free_port()}",
    }
    assert _cli(env, "clients", "add", "--name", "Dhr. Weg").returncode == 0
    assert _cli(env, "devices", "add", "btn-x", "--client", "1", "--kind", "alarm_button").returncode == 3
    removed = _cli(env, "devices", "remove", "btn-x")
    assert removed.returncode == 3
    assert "still lets btn-x in" in removed.stderr and "carealarm devices remove btn-x" in removed.stderr
    assert "was decommissioned already" in _cli(env, "devices", "remove", "btn-x").stdout


def test_broker_export_starts_an_external_broker_with_every_device(tmp_path: Path) -> None:
    """`carealarm broker-export` writes the plugin's file for a new external Mosquitto: started with it, the
    broker lets each device in with its own password and client id and takes the service as its admin."""
    port = free_port()
    env = {
        "CAREALARM_DATA_DIR": str(tmp_path / "var"),
        "CAREALARM_MQTT_URL": f"mqtt://carealarm:svc-pw@127.0.0.1:{port}",
    }
    assert _cli(env, "clients", "add", "--name", "Dhr. Vooraf").returncode == 0
    added = _cli(env, "devices", "add", "btn-pre", "--client", "1", "--kind", "alarm_button")
    assert added.returncode == 3  # no broker yet: the device is in the database only
    password = next(
        line.split()[2] for line in added.stdout.splitlines() if line.startswith("MQTT password:")
    )
    exported = _cli(env, "broker-export", "--dir", str(tmp_path / "export"))
    assert exported.returncode == 0, exported.stderr
    conf = tmp_path / "external.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous false\nplugin {dynsec_plugin()}\n"
        f"plugin_opt_config_file {tmp_path / 'export' / 'dynamic-security.json'}\n"
        + ("user root\n" if os.geteuid() == 0 else "")
    )
    broker = subprocess.Popen(
        ["mosquitto", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_for(lambda: _device_probe(port, "btn-pre", password), 10, what="btn-pre on the external broker")
        assert not _device_probe(port, "btn-pre", password, client_id="btn-pre-2")
        rotated = _cli(env, "devices", "rotate", "btn-pre")
        assert rotated.returncode == 0, rotated.stderr
        assert not _device_probe(port, "btn-pre", password)
    finally:
        broker.terminate()
        broker.wait(10)


# -- the demo: restarts never lock anyone out -----------------------------------------------------------


class Service:
    """`carealarm run` in a child process, as `make demo` starts it."""

    def __init__(self, tmp_path: Path, env: dict[str, str], *args: str) -> None:
        self.env = env
        self.log_path = tmp_path / "service.log"
        self.proc = _start(env, self.log_path, "run", *args)
        url = f"http://127.0.0.1:{env['CAREALARM_HTTP_PORT']}"
        wait_for(self._up(url), 60, interval=0.2, what=f"the service (log: {self.log_path})")

    def _up(self, url: str) -> Any:
        def up() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"carealarm exited with {self.proc.returncode}:\n{self.log()}")
            return _http_up(f"{url}/healthz")

        return up

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        assert _stop(self.proc) == 0, self.log()


def _demo_env(tmp_path: Path) -> dict[str, str]:
    return {
        "CAREALARM_DATA_DIR": str(tmp_path / "var"),
        "CAREALARM_HTTP_PORT": str(free_port()),
        "CAREALARM_EMBEDDED_MQTT_PORT": str(free_port()),
    }


def test_demo_restarts_keep_every_device_connected(tmp_path: Path) -> None:
    """`carealarm run --demo` restarted twice with a non-demo device connected: the device reconnects after
    each restart and is never refused; the demo's fleet file stays as written at seeding and still works."""
    env = _demo_env(tmp_path)
    port = int(env["CAREALARM_EMBEDDED_MQTT_PORT"])
    service = Service(tmp_path, env, "--demo")
    fleet_file = tmp_path / "var" / "fleet.json"
    fleet = fleet_file.read_bytes()
    added = _cli(env, "devices", "add", "btn-real", "--client", "1", "--kind", "alarm_button")
    assert added.returncode == 0, added.stderr
    password = next(
        line.split()[2] for line in added.stdout.splitlines() if line.startswith("MQTT password:")
    )
    link = DeviceLink(port, "btn-real", password)
    try:
        wait_for(lambda: link.accepted == 1, 10, what="btn-real's first connection")
        for restart in (1, 2):
            service.stop()
            service = Service(tmp_path, env, "--demo")
            wait_for(
                lambda n=restart: link.accepted == 1 + n or link.refused,
                20,
                what=f"btn-real to connect again after restart {restart}",
            )
            assert link.refused == [], f"btn-real refused after restart {restart}: {link.refused}"
        assert fleet_file.read_bytes() == fleet
        demo = {c["device_id"]: c["password"] for c in json.loads(fleet)}
        assert _device_probe(port, "btn-001", demo["btn-001"])
    finally:
        link.close()
        service.stop()


def test_demo_without_its_fleet_file_says_how_to_fix_it(tmp_path: Path) -> None:
    """An existing demo database without var/fleet.json: `run --demo --simulate` starts without the simulated
    fleet, says why and gives the command; that command makes the fleet work again."""
    env = _demo_env(tmp_path)
    Service(tmp_path, env, "--demo").stop()
    fleet_file = tmp_path / "var" / "fleet.json"
    fleet_file.unlink()
    service = Service(tmp_path, env, "--demo", "--simulate")
    try:
        wait_for(
            lambda: "the simulated fleet cannot run" in service.log(), 10, what="the missing-fleet message"
        )
        assert "and a simulated fleet" not in service.log()
        command = (
            service.log()
            .split("To give the demo devices new passwords and write them there: ")[1]
            .split("\n")[0]
        )
        assert command.startswith("carealarm devices rotate btn-001 ") and command.endswith(
            f"--fleet {fleet_file}"
        )
        fixed = _cli(env, *command.split()[1:])
        assert fixed.returncode == 0, fixed.stderr
        demo = {c["device_id"]: c["password"] for c in json.loads(fleet_file.read_text())}
        assert _device_probe(int(env["CAREALARM_EMBEDDED_MQTT_PORT"]), "med-001", demo["med-001"])
    finally:
        service.stop()


# -- the broker's packet limit ---------------------------------------------------------------------------


def test_oversized_packet_is_refused_at_the_broker(embedded_broker: EmbeddedBroker) -> None:
    """A 9 KB publish is refused by the broker (the device is disconnected, nothing is delivered); a 5 KB one
    still reaches the service, whose gateway refuses it with a reason."""
    embedded_broker.reload([("btn-big", mosquitto_hash("pw-big"))])
    service = MqttProbe(service_config(embedded_broker))
    link = DeviceLink(embedded_broker.port, "btn-big", "pw-big")
    try:
        assert service.connected()
        service.subscribe("carealarm/v1/devices/+/alarm")
        wait_for(lambda: link.accepted == 1, 5, what="the device's connection")
        topic = "carealarm/v1/devices/btn-big/alarm"
        # QoS 0: paho would resend a QoS 1 message after the reconnection, and be disconnected again.
        link.client.publish(topic, b'{"msg_id":"big","ts":1,"x":"' + b"a" * 9000 + b'"}', qos=0)
        wait_for(lambda: link.disconnects >= 1, 5, what="the broker to disconnect the sender")
        wait_for(lambda: link.accepted == 2, 10, what="the device to reconnect")
        link.client.publish(topic, b'{"msg_id":"mid","ts":1,"x":"' + b"a" * 5000 + b'"}', qos=1)
        got = [service.next(timeout=5)] + service.drain()
        assert [len(payload) for _t, payload, _r in got] == [5030]
    finally:
        link.close()
        service.close()


# -- device identity: every login tied to one client id (issue #13) -------------------------------------


def test_a_tablet_cannot_take_the_gateways_or_another_devices_session(
    api: TestClient, embedded_broker: EmbeddedBroker
) -> None:
    """A video tablet's credentials are refused under the gateway's client id, another device's id or any
    id but its own, and the device that owns the id stays connected (no kick, no false offline)."""
    tablet = _provision(api, "tab-1", kind="video")
    button = _provision(api, "btn-1")
    owner = DeviceLink(embedded_broker.port, "btn-1", button)
    try:
        wait_for(lambda: owner.accepted == 1, 5, what="btn-1's connection")
        for client_id in ("carealarm-gateway-gw1-alarms", "btn-1", "tab-1-video", "tab-1/video", "tab-2"):
            assert not _device_probe(embedded_broker.port, "tab-1", tablet, client_id=client_id), client_id
        assert _device_probe(embedded_broker.port, "tab-1", tablet)
        time.sleep(0.3)
        assert (owner.accepted, owner.disconnects) == (1, 0)
    finally:
        owner.close()


def test_a_tablet_holds_one_session_per_login(api: TestClient, embedded_broker: EmbeddedBroker) -> None:
    """The tablet's credentials hold one broker session per login: a second connection under any other
    client id is refused, and one under the same id takes the session over (the first is disconnected)."""
    tablet = _provision(api, "tab-1", kind="video")
    first = DeviceLink(embedded_broker.port, "tab-1", tablet)
    try:
        wait_for(lambda: first.accepted == 1, 5, what="the tablet's connection")
        assert not _device_probe(embedded_broker.port, "tab-1", tablet, client_id="tab-1-second")
        assert (first.accepted, first.disconnects) == (1, 0)
        assert _device_probe(embedded_broker.port, "tab-1", tablet)  # the same client id: a takeover
        wait_for(lambda: first.disconnects >= 1, 5, what="the first connection to be taken over")
    finally:
        first.close()


def test_a_tablets_video_login_is_tied_to_its_own_client_id(
    api: TestClient, embedded_broker: EmbeddedBroker
) -> None:
    """Provisioning a tablet gives its video endpoint a login of its own, `{id}/video` with the same
    password, tied to that client id; a button gets no such login."""
    response = api.post(
        "/api/manage/devices",
        json={
            "device_id": "tab-v",
            "client_id": api.get("/api/manage/clients").json()[0]["id"],
            "kind": "video",
        },
    )
    body = response.json()
    assert (body["mqtt_username"], body["mqtt_client_id"], body["mqtt_other_logins"]) == (
        "tab-v",
        "tab-v",
        ["tab-v/video"],
    )
    port, password = embedded_broker.port, body["password"]
    assert _device_probe(port, "tab-v/video", password)
    for client_id in ("tab-v", "tab-v-video", "carealarm-gateway-gw1-alarms"):
        assert not _device_probe(port, "tab-v/video", password, client_id=client_id), client_id
    button = _provision(api, "btn-v")
    assert not _device_probe(port, "btn-v/video", button)


def test_rotation_and_removal_hold_for_the_video_login_too(
    api: TestClient, embedded_broker: EmbeddedBroker
) -> None:
    """A tablet's rotation refuses the old password on both its logins at once, and its removal refuses
    both."""
    port = embedded_broker.port
    old = _provision(api, "tab-r", kind="video")
    rotated = api.post("/api/manage/devices/tab-r/rotate").json()
    assert rotated["broker_updated"] is True, rotated
    new = rotated["password"]
    for login in ("tab-r", "tab-r/video"):
        assert not _device_probe(port, login, old), login
        assert _device_probe(port, login, new), login
    assert api.delete("/api/manage/devices/tab-r").json()["broker_updated"] is True
    for login in ("tab-r", "tab-r/video"):
        assert not _device_probe(port, login, new), login


def test_cli_gives_a_tablet_both_logins_and_takes_both_away(
    embedded_broker: EmbeddedBroker, tmp_path: Path
) -> None:
    """`carealarm devices add|rotate|remove` for a tablet hold on both logins at an external broker."""
    env = {"CAREALARM_DATA_DIR": str(tmp_path / "var"), "CAREALARM_MQTT_URL": embedded_broker.url}
    port = embedded_broker.port
    assert _cli(env, "clients", "add", "--name", "Dhr. Beeld").returncode == 0
    added = _cli(env, "devices", "add", "tab-c", "--client", "1", "--kind", "video")
    assert added.returncode == 0 and "client id tab-c/video" in added.stdout, added.stderr
    first = next(line.split()[2] for line in added.stdout.splitlines() if line.startswith("MQTT password:"))
    assert _device_probe(port, "tab-c/video", first) and _device_probe(port, "tab-c", first)
    rotated = _cli(env, "devices", "rotate", "tab-c")
    assert rotated.returncode == 0, rotated.stderr
    second = rotated.stdout.split("new MQTT password ")[1].split()[0]
    assert not _device_probe(port, "tab-c/video", first)
    assert _device_probe(port, "tab-c/video", second)
    assert _cli(env, "devices", "remove", "tab-c").returncode == 0
    assert not _device_probe(port, "tab-c/video", second) and not _device_probe(port, "tab-c", second)


def test_no_device_id_can_be_a_video_login(api: TestClient, tmp_path: Path) -> None:
    """A device id may not hold '/', so no device can be called like a tablet's video login (`x/video`):
    the API and the command line refuse it with a reason."""
    cid = api.get("/api/manage/clients").json()[0]["id"]
    refused = api.post(
        "/api/manage/devices", json={"device_id": "tab-1/video", "client_id": cid, "kind": "video"}
    )
    assert refused.status_code == 422, refused.text
    env = {"CAREALARM_DATA_DIR": str(tmp_path / "var")}
    assert _cli(env, "clients", "add", "--name", "Dhr. Naam").returncode == 0
    cli = _cli(env, "devices", "add", "tab-1/video", "--client", "1", "--kind", "alarm_button")
    assert cli.returncode == 1 and "device id must be" in cli.stderr, cli.stderr
