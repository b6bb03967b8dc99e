"""The escalation engine's invariants, driven by hypothesis through random sequences of alarms, duplicates,
acknowledgements, resolutions and the passing of (simulated) time — against the real database code."""

from __future__ import annotations

import json
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from sqlalchemy import func, select

from central.auth import hash_password
from monitor.alerts import Action, IllegalTransition
from monitor.steps import run_due_steps
from monitor.store import apply_action, handle_pending_events
from storage.db import make_engine, make_session_factory
from storage.models import Alert, Base, DeviceEvent, DutyShift, EscalationStep, Notification
from storage.registry import add_client, add_device, add_user

T0 = 1_800_000_000_000
CHANNELS = frozenset({"email"})


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
        self.notes_at_resolve: dict[int, int] = {}
        with self.sessions.begin() as s:
            for name in ("A", "B"):
                client = add_client(s, name=name, now_ms=T0)
                add_device(s, device_id=f"btn-{name}", client_id=client.id, kind="alarm_button", now_ms=T0)
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
        self._store_alarm(device, f"m{self.msg}")

    @precondition(lambda self: bool(self.sent_alarms))
    @rule(data=st.data())
    def resend_alarm(self, data: st.DataObject) -> None:
        device, msg_id = data.draw(st.sampled_from(self.sent_alarms))
        self._store_alarm(device, msg_id)

    @rule(seconds=st.integers(0, 200))
    def time_passes(self, seconds: int) -> None:
        self.now += seconds * 1000
        with self.sessions.begin() as s:
            run_due_steps(s, self.now, CHANNELS, limit=1000)

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
            for alert in s.scalars(select(Alert).where(Alert.state == "open")):
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
        with self.sessions() as s:
            rows = s.execute(
                select(Alert.client_id, Alert.kind, func.count())
                .where(Alert.state != "resolved")
                .group_by(Alert.client_id, Alert.kind)
            ).all()
            stored = s.scalar(select(func.count()).select_from(DeviceEvent)) or 0
            counted = s.scalar(select(func.coalesce(func.sum(Alert.count), 0))) or 0
        assert all(n == 1 for _, _, n in rows)
        assert counted == stored == len(self.sent_alarms)

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
