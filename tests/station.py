"""A care station for end-to-end scenarios: `carealarm run --demo` in a child process (as a user starts it),
devices that speak the real protocol over a real broker, and a nurse's HTTP session.

One station is shared by the scenarios of a module (each scenario uses its own demo client), so the suite
pays for one start per database kind. The demo registry: client 1 Jansen (btn-001, tv-001, med-001),
2 de Boer (btn-002, tv-002, med-002), 3 Smit (btn-003, tv-003), 4 Mulder (btn-004, med-004), 5 Bos
(btn-005), 6 Meijer (btn-006, med-006).
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import httpx2 as httpx
import paho.mqtt.client as paho
from helpers import free_port, wait_for
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import create_engine, text

from storage.db import upgrade

TOPIC = "carealarm/v1/devices/{}/{}"


class Station:
    """`carealarm run --demo` on a database and broker of the caller's choosing, with short test timings."""

    def __init__(
        self,
        workdir: Path,
        *,
        database_url: str,
        mqtt: tuple[str, int] | None,
        policy: dict[str, object],
    ) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        self.kind = "sqlite" if database_url.startswith("sqlite") else "postgres"
        self.database_url = database_url
        self.http_port = free_port()
        self.url = f"http://127.0.0.1:{self.http_port}"
        self.data_dir = workdir / "var"
        self.gateway_name = f"st-{uuid.uuid4().hex[:8]}"
        if mqtt is None:  # the embedded broker, with each device's own credentials
            self.mqtt_host, self.mqtt_port, self.authenticated = "127.0.0.1", free_port(), True
        else:
            (self.mqtt_host, self.mqtt_port), self.authenticated = mqtt, False
        # A test fixture: seconds instead of minutes (people entering a policy get the checked ranges).
        upgrade(database_url)
        self.db = create_engine(database_url)  # for what a test checks in the system of record
        with self.db.begin() as conn:
            conn.execute(
                text("INSERT INTO policies (client_id, settings, updated_ms) VALUES (NULL, :s, :t)"),
                {"s": json.dumps(policy), "t": int(time.time() * 1000)},
            )
        env = {
            "CAREALARM_DATA_DIR": str(self.data_dir),
            "CAREALARM_HTTP_PORT": str(self.http_port),
            "CAREALARM_DATABASE_URL": database_url,
            "CAREALARM_POLL_INTERVAL_S": "1.0",
            # Sweeps every 2 s: a silent device or a flapping battery alert shows within seconds.
            "CAREALARM_DEVICE_SWEEP_INTERVAL_S": "2",
            "CAREALARM_GATEWAY_NAME": self.gateway_name,
        }
        if mqtt is None:
            env["CAREALARM_EMBEDDED_MQTT_PORT"] = str(self.mqtt_port)
        else:
            env["CAREALARM_MQTT_URL"] = f"mqtt://{self.mqtt_host}:{self.mqtt_port}"
        self.log_path = workdir / "service.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "carealarm.cli", "run", "--demo"],
            cwd=workdir,
            env={**os.environ, **env},
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        wait_for(self._healthy, 60, interval=0.2, what=f"the service on {self.url} (log: {self.log_path})")
        self.http = httpx.Client(base_url=self.url, timeout=10)
        r = self.http.post("/api/session", json={"username": "nurse", "password": "nurse"})
        r.raise_for_status()

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
        self.http.close()
        self.db.dispose()
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=20)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            self._log.close()
        return code

    # -- what a nurse sees through the API -------------------------------------------------------------
    def alerts(self, client_name: str | None = None) -> list[dict[str, Any]]:
        """Every alert not resolved (the console's snapshot), optionally of one client (by part of a name)."""
        r = self.http.get("/api/alerts")
        r.raise_for_status()
        rows: list[dict[str, Any]] = r.json()
        return [a for a in rows if client_name is None or client_name in a["client"]["name"]]

    def wait_alert(
        self, client_name: str, what: str, timeout: float = 30.0, **match: object
    ) -> dict[str, Any]:
        """Wait for an unresolved alert of the client whose fields match ``match`` (``kind=..`` etc)."""
        found: list[dict[str, Any]] = []

        def look() -> bool:
            found[:] = [a for a in self.alerts(client_name) if all(a.get(k) == v for k, v in match.items())]
            return bool(found)

        wait_for(look, timeout, interval=0.2, what=what)
        return found[0]

    def act(self, alert_id: int, action: str, **body: object) -> dict[str, Any]:
        r = self.http.post(f"/api/alerts/{alert_id}/{action}", json=body or None)
        assert r.status_code == 200, r.text
        data: dict[str, Any] = r.json()
        return data

    def client_id(self, client_name: str) -> int:
        r = self.http.get("/api/clients")
        r.raise_for_status()
        body = r.json()
        rows = body["items"]
        return int(next(c["id"] for c in rows if client_name in c["name"]))

    def metric(self, name: str) -> float:
        r = self.http.get("/metrics")
        for line in r.text.splitlines():
            if line.startswith((name + " ", name + "{")):
                return float(line.rsplit(" ", 1)[1])
        raise AssertionError(f"metric {name} not on /metrics")

    def device(self, device_id: str, *, will: bool = True) -> DeviceClient:
        password = None
        if self.authenticated:
            fleet = {d["device_id"]: d for d in json.loads((self.data_dir / "fleet.json").read_text())}
            password = fleet[device_id]["password"]
        return DeviceClient(self.mqtt_host, self.mqtt_port, device_id, password, will=will)


class DeviceClient:
    """A device speaking protocol v1 with paho: its own credentials, a Last Will, acks and commands read."""

    def __init__(self, host: str, port: int, device_id: str, password: str | None, *, will: bool) -> None:
        self.id = device_id
        self.acks: queue.Queue[dict[str, Any]] = queue.Queue()
        self.commands: queue.Queue[dict[str, Any]] = queue.Queue()
        self._seq = 0
        self._prefix = uuid.uuid4().hex[:6]
        self.client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2, client_id=device_id, protocol=paho.MQTTv5
        )
        if password is not None:
            self.client.username_pw_set(device_id, password)
        if will:
            self.client.will_set(TOPIC.format(device_id, "status"), b"offline", qos=1, retain=True)
        subscribed: queue.Queue[bool] = queue.Queue()

        def on_connect(c: paho.Client, _u: object, _f: object, reason: Any, _p: object) -> None:
            if reason.is_failure:
                subscribed.put(False)
                return
            c.subscribe([(TOPIC.format(device_id, "ack"), 1), (TOPIC.format(device_id, "cmd"), 1)])

        def on_subscribe(_c: paho.Client, _u: object, _mid: int, _codes: object, _p: object) -> None:
            subscribed.put(True)

        def on_message(_c: paho.Client, _u: object, msg: paho.MQTTMessage) -> None:
            body = json.loads(msg.payload)
            (self.acks if msg.topic.endswith("/ack") else self.commands).put(body)

        self.client.on_connect = on_connect
        self.client.on_subscribe = on_subscribe
        self.client.on_message = on_message
        self.client.connect(host, port, keepalive=5)
        self.client.loop_start()
        assert subscribed.get(timeout=10), f"{device_id} could not connect"
        self.client.publish(
            TOPIC.format(device_id, "status"), b"online", qos=1, retain=True
        ).wait_for_publish(5)

    def msg_id(self) -> str:
        self._seq += 1
        return f"{self._prefix}-{self._seq}"

    def send(self, kind: str, body: dict[str, Any], msg_id: str | None = None) -> dict[str, Any]:
        """Publish an event and wait for the service's application ack of it."""
        msg_id = msg_id or self.msg_id()
        payload = {"msg_id": msg_id, "ts": int(time.time() * 1000), **body}
        self.client.publish(TOPIC.format(self.id, kind), json.dumps(payload), qos=1).wait_for_publish(5)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            ack = self.acks.get(timeout=max(0.1, deadline - time.monotonic()))
            if ack.get("msg_id") == msg_id:
                return ack
        raise AssertionError(f"no ack for {kind} {msg_id} from the service")

    def heartbeat(self, **body: object) -> None:
        payload = {"msg_id": self.msg_id(), "ts": int(time.time() * 1000), **body}
        self.client.publish(TOPIC.format(self.id, "heartbeat"), json.dumps(payload), qos=1).wait_for_publish(
            5
        )

    def next_command(self, timeout: float = 10.0) -> dict[str, Any]:
        return self.commands.get(timeout=timeout)

    def vanish(self) -> None:
        """The connection dies without a DISCONNECT (power cut, network gone): the broker sends the Will."""
        self.client.loop_stop()
        sock = self.client.socket()
        if sock is not None:
            sock.close()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
