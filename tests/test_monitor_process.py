"""The monitor as a process: killed with SIGKILL mid-escalation, two monitors on one PostgreSQL, and the
whole missed-dose chain from a simulated dispenser to the console and a district nurse's e-mail inbox.
Timings are configured short (seconds); each test prints what it measured."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from email import message_from_bytes
from http.cookiejar import CookieJar
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from helpers import free_port, wait_for
from sqlalchemy import func, select

from carealarm.broker import EmbeddedBroker
from central.auth import hash_password
from storage.db import SessionFactory, make_engine, make_session_factory, upgrade
from storage.models import (
    Alert,
    AlertChange,
    DeviceEvent,
    DutyShift,
    EscalationStep,
    MedicationDose,
    Notification,
)
from storage.models import Policy as PolicyRow
from storage.registry import add_client, add_device, add_user


class Inbox:
    def __init__(self) -> None:
        self.mails: list[tuple[list[str], str]] = []
        self.lock = threading.Lock()

    async def handle_DATA(self, _server: Any, _session: Any, envelope: Any) -> str:
        subject = str(message_from_bytes(envelope.content)["Subject"])
        with self.lock:
            self.mails.append((list(envelope.rcpt_tos), subject))
        return "250 OK"


@pytest.fixture
def smtp() -> Iterator[tuple[int, Inbox]]:
    inbox, port = Inbox(), free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    yield port, inbox
    controller.stop()


def now_ms() -> int:
    return int(time.time() * 1000)


def _staff_and_policy(sessions: SessionFactory, **policy: object) -> None:
    with sessions.begin() as s:
        for username, role, district in (
            ("nurse", "care_nurse", ""),
            ("sup", "supervisor", ""),
            ("wijk", "district_nurse", "Zuid"),
        ):
            user = add_user(
                s,
                username=username,
                display_name=username.title(),
                role=role,
                district=district,
                password_hash=hash_password(f"{username}-password"),
                now_ms=now_ms(),
            )
            user.email = f"{username}@example.org"
            s.add(DutyShift(user_id=user.id, role=role, district=district, starts_ms=0, ends_ms=now_ms() * 2))
        # A test fixture: seconds instead of minutes (people entering a policy get the checked ranges).
        s.add(PolicyRow(client_id=None, settings=json.dumps(policy), updated_ms=now_ms()))


def _alarm_row(sessions: SessionFactory, device: str, msg_id: str) -> None:
    with sessions.begin() as s:
        t = now_ms()
        s.add(
            DeviceEvent(
                device_id=device,
                msg_id=msg_id,
                kind="alarm",
                device_ts_ms=t,
                received_ms=t,
                payload=json.dumps({"msg_id": msg_id, "ts": t}),
            )
        )


class Proc:
    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        self._fh = open(log, "ab")  # noqa: SIM115 - closed in stop()
        self.p = subprocess.Popen(
            [sys.executable, "-m", "carealarm.cli", *args],
            env={**os.environ, **env},
            stdout=self._fh,
            stderr=subprocess.STDOUT,
        )

    def kill9(self) -> None:
        self.p.send_signal(signal.SIGKILL)
        self.p.wait(10)
        self._fh.close()

    def stop(self) -> int:
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(20)
            except subprocess.TimeoutExpired:
                self.p.kill()
        self._fh.close()
        return int(self.p.returncode or 0)


def _env(db_url: str, broker: EmbeddedBroker, tmp_path: Path, smtp_port: int) -> dict[str, str]:
    return {
        "CAREALARM_DATABASE_URL": db_url,
        "CAREALARM_MQTT_URL": broker.url,
        "CAREALARM_DATA_DIR": str(tmp_path),
        "CAREALARM_SMTP_HOST": "127.0.0.1",
        "CAREALARM_SMTP_PORT": str(smtp_port),
        "CAREALARM_POLL_INTERVAL_S": "0.5",
    }


def test_monitor_killed_mid_escalation_runs_the_step_once_after_restart(
    db_url: str, embedded_broker: EmbeddedBroker, tmp_path: Path, smtp: tuple[int, Inbox]
) -> None:
    """SIGKILL before the 60-s step is due (here 4 s): the restarted monitor runs it, late but once."""
    upgrade(db_url)
    engine = make_engine(db_url)
    sessions = make_session_factory(engine)
    with sessions.begin() as s:
        client = add_client(s, name="Dhr. de Boer", now_ms=now_ms())
        add_device(s, device_id="btn-k", client_id=client.id, kind="alarm_button", now_ms=now_ms())
    _staff_and_policy(sessions, alarm_first_escalation_s=4, alarm_second_escalation_s=3600)
    env = _env(db_url, embedded_broker, tmp_path, smtp[0])
    first = Proc(["monitor"], env, tmp_path / "monitor1.log")
    try:
        _alarm_row(sessions, "btn-k", "k1")
        wait_for(lambda: _alerts(sessions) == 1, 20, what="the alert to open")
        first.kill9()
        time.sleep(6)  # the step falls due while no monitor runs
        second = Proc(["monitor"], env, tmp_path / "monitor2.log")
        wait_for(lambda: _escalations(sessions) >= 1, 30, what="the step after the restart")
        time.sleep(2)
        with sessions() as s:
            step = s.scalars(select(EscalationStep).where(EscalationStep.level == 1)).one()
            late = step.late_ms
        mails = [m for m in smtp[1].mails if "ESCALATED" in m[1]]
        wait_for(lambda: len([m for m in smtp[1].mails if "ESCALATED" in m[1]]) >= 2, 20, what="the pages")
        print(
            f"\nmonitor kill -9: step due while down ran {late} ms late, "
            f"escalations {_escalations(sessions)}, "
            f"pages {len(smtp[1].mails)}"
        )
        assert _escalations(sessions) == 1 and step.state == "done"
        assert late is not None and late >= 0
        assert sorted(r for rcpt, _ in smtp[1].mails for r in rcpt) == [
            "nurse@example.org",
            "sup@example.org",
        ]
        assert second.stop() == 0
        del mails
    finally:
        first.stop()
        engine.dispose()


def _alerts(sessions: SessionFactory) -> int:
    with sessions() as s:
        return int(s.scalar(select(func.count()).select_from(Alert)) or 0)


def _escalations(sessions: SessionFactory) -> int:
    with sessions() as s:
        return int(
            s.scalar(select(func.count()).select_from(AlertChange).where(AlertChange.change == "escalated"))
            or 0
        )


def test_two_monitors_on_postgres_run_each_step_once(
    pg_url: str, embedded_broker: EmbeddedBroker, tmp_path: Path, smtp: tuple[int, Inbox]
) -> None:
    """Two monitor processes share one PostgreSQL: 10 alarms, 2 levels each, every step and page once."""
    upgrade(pg_url)
    engine = make_engine(pg_url)
    sessions = make_session_factory(engine)
    with sessions.begin() as s:
        for i in range(10):
            client = add_client(s, name=f"Client {i}", now_ms=now_ms())
            add_device(s, device_id=f"btn-{i}", client_id=client.id, kind="alarm_button", now_ms=now_ms())
    _staff_and_policy(sessions, alarm_first_escalation_s=2, alarm_second_escalation_s=4)
    env = _env(pg_url, embedded_broker, tmp_path, smtp[0])
    procs = [Proc(["monitor"], env, tmp_path / f"m{i}.log") for i in range(2)]
    try:
        time.sleep(2)
        for i in range(10):
            _alarm_row(sessions, f"btn-{i}", f"a{i}")
        wait_for(lambda: _escalations(sessions) >= 20, 60, what="20 escalations")
        time.sleep(2)
        with sessions() as s:
            steps = s.execute(select(EscalationStep.state, func.count()).group_by(EscalationStep.state)).all()
            pages = s.execute(
                select(
                    Notification.alert_id, Notification.level, Notification.recipient, func.count()
                ).group_by(Notification.alert_id, Notification.level, Notification.recipient)
            ).all()
        print(
            f"\ntwo monitors: escalations {_escalations(sessions)}, steps {dict(steps)}, "
            f"notifications {sum(n for *_, n in pages)}"
        )
        assert _escalations(sessions) == 20
        assert dict(steps) == {"done": 20}
        assert all(n == 1 for *_, n in pages) and len(pages) == 10 * 4
        assert all(p.stop() == 0 for p in procs)
    finally:
        for p in procs:
            p.stop()
        engine.dispose()


def test_missed_dose_reaches_console_and_district_nurse_then_late_dose_resolves(
    tmp_path: Path, smtp: tuple[int, Inbox]
) -> None:
    """`carealarm run` with short timings: the dispenser's dose goes untaken -> the alert is on the console
    and the district nurse on duty gets an e-mail; the dispenser then reports it taken late -> resolved."""
    db_url = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    upgrade(db_url)
    engine = make_engine(db_url)
    sessions = make_session_factory(engine)
    due = (now_ms() // 60_000 + 1) * 60_000  # the next whole minute
    local = time.strftime("%H:%M", time.gmtime(due / 1000))
    with sessions.begin() as s:
        client = add_client(s, name="Mevr. Smit", district="Zuid", now_ms=now_ms())
        add_device(
            s, device_id="med-1", client_id=client.id, kind="dispenser", now_ms=now_ms(), password="med-pw"
        )
        s.add(MedicationDose(client_id=client.id, device_id="med-1", dose_id="noon", at=local))
    _staff_and_policy(sessions, dose_grace_s=3, dose_alert_escalation_s=3)
    http, mqtt = free_port(), free_port()
    env = {
        "CAREALARM_DATABASE_URL": db_url,
        "CAREALARM_DATA_DIR": str(tmp_path),
        "CAREALARM_HTTP_PORT": str(http),
        "CAREALARM_EMBEDDED_MQTT_PORT": str(mqtt),
        "CAREALARM_SMTP_HOST": "127.0.0.1",
        "CAREALARM_SMTP_PORT": str(smtp[0]),
        "CAREALARM_TIMEZONE": "UTC",
        "CAREALARM_POLL_INTERVAL_S": "0.5",
    }
    service = Proc(["run"], env, tmp_path / "run.log")
    try:
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()))
        wait_for(lambda: _sign_in(opener, http), 30, what="the console")
        wait_for(
            lambda: _open_alerts(opener, http), 100, interval=0.5, what="the missed-dose alert on the console"
        )
        [alert] = _open_alerts(opener, http)
        assert alert["kind"] == "missed_dose" and alert["client"]["name"] == "Mevr. Smit"
        wait_for(
            lambda: any("wijk@example.org" in r for r, _ in smtp[1].mails),
            30,
            what="the district nurse's mail",
        )
        print(
            f"\nmissed dose: alert '{alert['detail']}' on the console "
            f"{(now_ms() - due) / 1000:.1f} s after the due "
            f"time; mails: {[(r, s) for r, s in smtp[1].mails]}"
        )
        subprocess.run(
            [
                "mosquitto_pub",
                "-h",
                "127.0.0.1",
                "-p",
                str(mqtt),
                "-i",
                "med-1",
                "-u",
                "med-1",
                "-P",
                "med-pw",
                "-q",
                "1",
                "-t",
                "carealarm/v1/devices/med-1/dose",
                "-m",
                json.dumps(
                    {"msg_id": "late-1", "ts": now_ms(), "event": "taken", "dose_id": "noon", "due_ts": due}
                ),
            ],
            check=True,
            timeout=10,
        )
        wait_for(lambda: not _open_alerts(opener, http), 20, what="the late dose to resolve the alert")
        with sessions() as s:
            resolved = s.scalars(select(Alert).where(Alert.kind != "probe")).one()  # not the watchdog's probe
        assert resolved.outcome == "dose_taken_late"
    finally:
        assert service.stop() == 0, service.log.read_text()[-3000:]
        engine.dispose()


def _sign_in(opener: urllib.request.OpenerDirector, port: int) -> bool:
    body = json.dumps({"username": "nurse", "password": "nurse-password"}).encode()
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/session", data=body, headers={"Content-Type": "application/json"}
    )
    try:
        with opener.open(req, timeout=2) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def _open_alerts(opener: urllib.request.OpenerDirector, port: int) -> list[dict[str, Any]]:
    with opener.open(f"http://127.0.0.1:{port}/api/alerts", timeout=5) as r:
        return list(json.loads(r.read()))
