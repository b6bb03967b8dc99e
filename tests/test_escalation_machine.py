"""The escalation engine's invariants, driven by hypothesis through random sequences of alarms, duplicates,
acknowledgements, resolutions, devices that fall silent, drop off (Last Will) and come back, and the passing
of (simulated) time — against the real database code."""

from __future__ import annotations

import json
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from sqlalchemy import func, select, update

from care.alert_store import apply_action
from care.alerts import Action, IllegalTransition
from care.steps import run_due_steps
from central.auth import hash_password
from monitor.devices import sweep_devices
from monitor.events import handle_pending_events
from storage.db import make_engine, make_session_factory
from storage.models import Alert, Base, Device, DeviceEvent, DutyShift, EscalationStep, Notification
from storage.registry import add_client, add_device, add_user

T0 = 1_800_000_000_000
CHANNELS = frozenset({"email"})
HEARTBEAT_S = 30
DETECT_MS = 2 * HEARTBEAT_S * 1000  # the default policy: offline after 2 missed heartbeats
SWEEP_MS = 10_000  # the monitor sweeps devices every 10 s
DEVICES = ["btn-A", "btn-B", "tab-A"]


class EscalationMachine(RuleBasedStateMachine):
    """Two clients with alarm buttons, a nurse and a supervisor on duty, and a clock we move by hand."""

    def __init__(self) -> None:
        super().__init__()
        path = Path(f"/tmp/carealarm-esc-{id(self)}.sqlite3")
        path.unlink(missing_ok=True)
        self.engine = make_engine(f"sqlite:///{path}")
        Base.metadata.create_all(self.engine)
        self.sessions = make_session_factory(self.engine)
        self.now = T0
        self.msg = 0
        self.sent_alarms: list[tuple[str, str]] = []
        self.presses: list[tuple[str, int]] = []  # (device, when)
        self.notes_at_resolve: dict[int, int] = {}
        # What the devices really do: when each went offline (None = online and heartbeating).
        self.offline_since: dict[str, int | None] = dict.fromkeys(DEVICES)
        self.closed_by_person: dict[str, int] = {}  # device -> when a person last closed its offline alert
        with self.sessions.begin() as s:
            for name in ("A", "B"):
                client = add_client(s, name=name, now_ms=T0)
                add_device(s, device_id=f"btn-{name}", client_id=client.id, kind="alarm_button", now_ms=T0)
                if name == "A":  # a second device of client A: its state must never hide the button's
                    add_device(s, device_id="tab-A", client_id=client.id, kind="video", now_ms=T0)
            for device in s.scalars(select(Device)):
                device.last_seen_ms, device.online, device.heartbeat_interval_s = T0, True, HEARTBEAT_S
            for username, role in (("n", "care_nurse"), ("s", "supervisor"), ("d", "district_nurse")):
                user = add_user(
                    s,
                    username=username,
                    display_name=username,
                    role=role,
                    password_hash=hash_password("x"),
                    now_ms=T0,
                )
                user.email = f"{username}@example.org"
                s.add(DutyShift(user_id=user.id, role=role, district="", starts_ms=0, ends_ms=2 * T0))
            self.nurse_id = user.id

    def teardown(self) -> None:
        self.engine.dispose()

    def _store_alarm(self, device: str, msg_id: str) -> None:
        with self.sessions.begin() as s:
            exists = s.scalar(
                select(func.count())
                .select_from(DeviceEvent)
                .where(DeviceEvent.device_id == device, DeviceEvent.msg_id == msg_id)
            )
            if not exists:  # the gateway's unique key: a resent message is stored once
                s.add(
                    DeviceEvent(
                        device_id=device,
                        msg_id=msg_id,
                        kind="alarm",
                        device_ts_ms=self.now,
                        received_ms=self.now,
                        payload=json.dumps({"msg_id": msg_id, "ts": self.now}),
                    )
                )
        with self.sessions.begin() as s:
            handle_pending_events(s, self.now, CHANNELS)

    @rule(device=st.sampled_from(["btn-A", "btn-B"]))
    def press_alarm(self, device: str) -> None:
        self.msg += 1
        self.sent_alarms.append((device, f"m{self.msg}"))
        self.presses.append((device, self.now))
        self._store_alarm(device, f"m{self.msg}")

    def _status(self, device: str, online: bool) -> None:
        """The gateway's part: a live status report is stored as an event and updates liveness."""
        self.msg += 1
        with self.sessions.begin() as s:
            s.add(
                DeviceEvent(
                    device_id=device,
                    msg_id=f"~status-{self.msg}",
                    kind="status",
                    device_ts_ms=self.now,
                    received_ms=self.now,
                    payload=json.dumps({"online": online}),
                )
            )
            row = s.get(Device, device)
            assert row is not None
            row.online, row.online_changed_ms = online, self.now
            if online:
                row.last_seen_ms = self.now
        with self.sessions.begin() as s:
            handle_pending_events(s, self.now, CHANNELS)

    @precondition(lambda self: any(v is None for v in self.offline_since.values()))
    @rule(data=st.data(), last_will=st.booleans())
    def a_device_drops_off(self, data: st.DataObject, last_will: bool) -> None:
        """Power cut (silent: no Last Will) or a lost connection (the broker sends its Last Will)."""
        device = data.draw(st.sampled_from([d for d, v in self.offline_since.items() if v is None]))
        if last_will:
            self.offline_since[device] = self.now
            self._status(device, False)
        else:  # silent: it was last heard at its last heartbeat
            with self.sessions() as s:
                row = s.get(Device, device)
                assert row is not None and row.last_seen_ms is not None
                self.offline_since[device] = row.last_seen_ms

    @precondition(lambda self: any(v is not None for v in self.offline_since.values()))
    @rule(data=st.data(), with_status=st.booleans())
    def a_device_comes_back(self, data: st.DataObject, with_status: bool) -> None:
        """It reconnects (and says so), or its heartbeats simply resume."""
        device = data.draw(st.sampled_from([d for d, v in self.offline_since.items() if v is not None]))
        self.offline_since[device] = None
        if with_status:
            self._status(device, True)
        else:
            self._heartbeat(device)

    def _heartbeat(self, device: str) -> None:
        with self.sessions.begin() as s:
            row = s.get(Device, device)
            assert row is not None
            row.last_seen_ms, row.online = self.now, True

    @precondition(lambda self: bool(self.sent_alarms))
    @rule(data=st.data())
    def resend_alarm(self, data: st.DataObject) -> None:
        device, msg_id = data.draw(st.sampled_from(self.sent_alarms))
        self._store_alarm(device, msg_id)

    @rule(seconds=st.integers(0, 200))
    def time_passes(self, seconds: int) -> None:
        """Time passes as the monitor sees it: heartbeats of the live devices, steps, a sweep every 10 s."""
        target = self.now + seconds * 1000
        while self.now < target:
            self.now = min(target, self.now + SWEEP_MS)
            live = [d for d, since in self.offline_since.items() if since is None]
            with self.sessions.begin() as s:
                s.execute(
                    update(Device).where(Device.id.in_(live)).values(last_seen_ms=self.now, online=True)
                )
                run_due_steps(s, self.now, CHANNELS, limit=1000)
                sweep_devices(s, self.now, CHANNELS)

    @rule(data=st.data(), action=st.sampled_from([Action.ACKNOWLEDGE, Action.RESOLVE]))
    def nurse_acts(self, data: st.DataObject, action: Action) -> None:
        with self.sessions() as s:
            ids = list(s.scalars(select(Alert.id).where(Alert.state != "resolved")))
        if not ids:
            return
        alert_id = data.draw(st.sampled_from(ids))
        try:
            with self.sessions.begin() as s:
                apply_action(
                    s,
                    alert_id=alert_id,
                    action=action,
                    actor_id=self.nurse_id,
                    now_ms=self.now,
                    outcome="talked_to_client" if action is Action.RESOLVE else None,
                )
        except IllegalTransition:
            return
        with self.sessions() as s:
            acted = s.get(Alert, alert_id)
            assert acted is not None
            if acted.kind == "offline" and acted.state == "resolved" and acted.device_id:
                self.closed_by_person[acted.device_id] = self.now
        if action is Action.RESOLVE:
            with self.sessions() as s:
                self.notes_at_resolve[alert_id] = (
                    s.scalar(
                        select(func.count())
                        .select_from(Notification)
                        .where(Notification.alert_id == alert_id)
                    )
                    or 0
                )

    @invariant()
    def an_unacknowledged_alarm_escalates_on_time(self) -> None:
        """Every open alarm is at the level its age demands (60 s -> 1, 180 s -> 2) once steps ran."""
        with self.sessions() as s:
            for alert in s.scalars(select(Alert).where(Alert.state == "open", Alert.kind == "alarm")):
                due = sum(1 for after in (60_000, 180_000) if self.now >= alert.opened_ms + after)
                pending_due = s.scalar(
                    select(func.count())
                    .select_from(EscalationStep)
                    .where(
                        EscalationStep.alert_id == alert.id,
                        EscalationStep.state == "pending",
                        EscalationStep.due_ms <= self.now,
                    )
                )
                if not pending_due:
                    assert alert.level == due, (alert.level, due)

    @invariant()
    def an_acknowledgement_stops_every_pending_notification(self) -> None:
        with self.sessions() as s:
            stray = s.scalar(
                select(func.count())
                .select_from(Notification)
                .join(Alert)
                .where(Alert.state != "open", Notification.state == "pending")
            )
            pending_steps = s.scalar(
                select(func.count())
                .select_from(EscalationStep)
                .join(Alert)
                .where(Alert.state != "open", EscalationStep.state == "pending")
            )
        assert stray == 0 and pending_steps == 0

    @invariant()
    def a_duplicate_event_never_opens_a_second_alert(self) -> None:
        """Each press is counted once, and a client has at most one alarm nobody has answered yet."""
        with self.sessions() as s:
            rows = s.execute(
                select(Alert.client_id, func.count())
                .where(Alert.state == "open", Alert.kind == "alarm")
                .group_by(Alert.client_id)
            ).all()
            stored = (
                s.scalar(select(func.count()).select_from(DeviceEvent).where(DeviceEvent.kind == "alarm"))
                or 0
            )
            counted = (
                s.scalar(select(func.coalesce(func.sum(Alert.count), 0)).where(Alert.kind == "alarm")) or 0
            )
        assert all(n == 1 for _, n in rows)
        assert counted == stored == len(self.sent_alarms)

    @invariant()
    def no_alarm_press_leaves_the_open_queue_without_a_persons_action(self) -> None:
        """Every press is on an alarm that is open, or that a person took or closed after the press."""
        with self.sessions() as s:
            alarms = list(s.scalars(select(Alert).where(Alert.kind == "alarm")))
            buttons = {d.id: d.client_id for d in s.scalars(select(Device))}
        for device, at in self.presses:
            holders = [
                a for a in alarms if a.client_id == buttons[device] and a.opened_ms <= at <= a.last_event_ms
            ]
            assert any(
                a.state == "open"
                or (a.acknowledged_by is not None and (a.acknowledged_ms or 0) >= at)
                or (a.acknowledged_ms is None and a.resolved_by is not None and (a.resolved_ms or 0) >= at)
                for a in holders
            ), (device, at, [(a.id, a.state, a.opened_ms, a.last_event_ms) for a in holders])

    @invariant()
    def no_device_is_offline_past_its_detection_time_without_an_alert_of_its_own(self) -> None:
        """Counting from when it went offline (or a person last closed its alert), plus one sweep."""
        with self.sessions() as s:
            alerted = set(
                s.scalars(select(Alert.device_id).where(Alert.kind == "offline", Alert.state != "resolved"))
            )
        for device, since in self.offline_since.items():
            if since is None:
                continue
            start = max(since, self.closed_by_person.get(device, 0))
            if self.now - start > DETECT_MS + SWEEP_MS:
                assert device in alerted, (device, since, self.now)

    @invariant()
    def a_resolved_alert_never_notifies_again(self) -> None:
        with self.sessions() as s:
            for alert_id, before in self.notes_at_resolve.items():
                now = s.scalar(
                    select(func.count()).select_from(Notification).where(Notification.alert_id == alert_id)
                )
                assert now == before


EscalationMachine.TestCase.settings = settings(
    max_examples=25, stateful_step_count=25, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
TestEscalation = EscalationMachine.TestCase
