"""The monitor's behaviours on SQLite and PostgreSQL, with a simulated clock: policies, doses, cancels,
maintenance windows, silent devices, visits and paging."""

from __future__ import annotations

import datetime as dt
import json
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select

from care.alert_store import apply_action
from care.alerts import Action
from care.doses import due_times, miss_priority, plan_doses
from care.policy import DEFAULT_POLICY, PolicyError, merge_policy
from care.steps import run_due_steps
from care.visits import confirm_arrival, send_visit
from central.auth import hash_password
from monitor.devices import judge_device, sweep_devices
from monitor.events import handle_pending_events
from storage.db import SessionFactory
from storage.models import (
    Alert,
    AlertNote,
    Contact,
    Device,
    DeviceEvent,
    DoseInstance,
    DutyShift,
    MaintenanceWindow,
    MedicationDose,
    Notification,
    Policy,
    Suppression,
)
from storage.registry import add_client, add_device, add_user

T0 = 1_800_000_000_000
EMAIL = frozenset({"email"})
AMS = ZoneInfo("Europe/Amsterdam")


class World:
    """One client with an alarm button and a dispenser, and staff on duty; time moves when told."""

    def __init__(self, sessions: SessionFactory) -> None:
        self.sessions = sessions
        self.now = T0
        self.seq = 0
        with sessions.begin() as s:
            client = add_client(s, name="Mevr. Jansen", district="Zuid", now_ms=T0)
            self.client_id = client.id
            add_device(s, device_id="btn", client_id=client.id, kind="alarm_button", now_ms=T0)
            add_device(s, device_id="med", client_id=client.id, kind="dispenser", now_ms=T0)
            for username, role, district in (
                ("nurse", "care_nurse", ""),
                ("sup", "supervisor", ""),
                ("wijk", "district_nurse", "Zuid"),
            ):
                user = add_user(
                    s,
                    username=username,
                    display_name=username,
                    role=role,
                    district=district,
                    password_hash=hash_password("x"),
                    now_ms=T0,
                )
                user.email = f"{username}@example.org"
                s.add(DutyShift(user_id=user.id, role=role, district=district, starts_ms=0, ends_ms=2 * T0))

    def event(self, device: str, kind: str, body: dict[str, object]) -> str:
        self.seq += 1
        msg_id = f"m{self.seq}"
        with self.sessions.begin() as s:
            s.add(
                DeviceEvent(
                    device_id=device,
                    msg_id=msg_id,
                    kind=kind,
                    device_ts_ms=self.now,
                    received_ms=self.now,
                    payload=json.dumps({"msg_id": msg_id, "ts": self.now, **body}),
                )
            )
        self.handle()
        return msg_id

    def handle(self) -> None:
        with self.sessions.begin() as s:
            handle_pending_events(s, self.now, EMAIL)

    def tick(self, seconds: float) -> None:
        self.now += int(seconds * 1000)
        with self.sessions.begin() as s:
            run_due_steps(s, self.now, EMAIL, limit=1000)

    def alerts(self, kind: str | None = None) -> list[Alert]:
        with self.sessions() as s:
            q = select(Alert).order_by(Alert.id)
            return list(s.scalars(q.where(Alert.kind == kind) if kind else q))

    def mails(self) -> list[str]:
        with self.sessions() as s:
            return [
                n.recipient
                for n in s.scalars(
                    select(Notification).where(Notification.channel == "email").order_by(Notification.id)
                )
            ]

    def set_policy(self, **overrides: object) -> None:
        with self.sessions.begin() as s:
            s.add(Policy(client_id=None, settings=json.dumps(overrides), updated_ms=T0))


@pytest.fixture
def world(sessions: SessionFactory) -> World:
    return World(sessions)


def test_alarm_pages_nurses_and_supervisor_at_60_s_then_district_at_180_s(world: World) -> None:
    """Unanswered: level 1 at 60 s (care nurses + supervisor), level 2 at 180 s (supervisor + district)."""
    world.event("btn", "alarm", {})
    world.tick(59)
    assert world.alerts("alarm")[0].level == 0 and world.mails() == []
    world.tick(2)
    assert world.alerts("alarm")[0].level == 1
    assert sorted(world.mails()) == ["nurse@example.org", "sup@example.org"]
    world.tick(120)
    assert world.alerts("alarm")[0].level == 2
    assert sorted(world.mails()[2:]) == ["sup@example.org", "wijk@example.org"]


def test_acknowledged_alarm_does_not_escalate(world: World) -> None:
    """Acknowledged at 30 s: no step runs later and nobody is paged; the answer time is 30 s."""
    world.event("btn", "alarm", {})
    world.tick(30)
    with world.sessions.begin() as s:
        apply_action(
            s, alert_id=world.alerts()[0].id, action=Action.ACKNOWLEDGE, actor_id=None, now_ms=world.now
        )
    world.tick(300)
    alert = world.alerts("alarm")[0]
    assert (alert.level, world.mails(), alert.acknowledged_ms - alert.opened_ms) == (0, [], 30_000)


def test_cancel_inside_the_pre_alarm_window_closes_the_alarm(world: World) -> None:
    """The client cancels 10 s after pressing: the alarm is resolved as cancelled, with a note."""
    msg = world.event("btn", "alarm", {})
    world.tick(10)
    world.event("btn", "alarm", {"cancels": msg})
    alert = world.alerts("alarm")[0]
    assert (alert.state, alert.outcome) == ("resolved", "cancelled_by_client")


def test_cancel_after_the_window_leaves_the_alarm_open(world: World) -> None:
    """A cancel 45 s after the press (window 30 s) keeps the alarm open and notes the cancel."""
    msg = world.event("btn", "alarm", {})
    world.now += 45_000
    world.event("btn", "alarm", {"cancels": msg})
    assert world.alerts("alarm")[0].state == "open"
    with world.sessions() as s:
        assert "outside the pre-alarm window" in s.scalars(select(AlertNote.text)).one()


def test_maintenance_window_records_instead_of_alerting(world: World) -> None:
    """While the client is in hospital, a device going offline is recorded, not alerted."""
    with world.sessions.begin() as s:
        s.add(
            MaintenanceWindow(
                client_id=world.client_id, starts_ms=T0 - 1, ends_ms=T0 + 3_600_000, reason="in hospital"
            )
        )
    world.event("med", "status", {"online": False})
    assert world.alerts() == []
    with world.sessions() as s:
        assert [x.kind for x in s.scalars(select(Suppression))] == ["offline"]


def test_device_offline_and_back(world: World) -> None:
    """Last Will: an offline alarm button is an urgent alert; back online resolves it."""
    world.event("btn", "status", {"online": False})
    [alert] = world.alerts("offline")
    assert alert.priority == 2
    world.event("btn", "status", {"online": True})
    assert world.alerts("offline")[0].outcome == "back_online"


def test_silent_device_judgement() -> None:
    """Silent after 2 missed intervals; never connected after the grace; battery with hysteresis."""
    p = DEFAULT_POLICY
    base = {"online": True, "interval_s": 60, "created_ms": 0, "battery": 50, "policy": p}
    assert not judge_device(last_seen_ms=T0, now_ms=T0 + 119_000, **base).silent  # type: ignore[arg-type]
    assert judge_device(last_seen_ms=T0, now_ms=T0 + 121_000, **base).silent  # type: ignore[arg-type]
    never = judge_device(
        last_seen_ms=None,
        online=None,
        interval_s=None,
        created_ms=T0,
        battery=None,
        now_ms=T0 + 3_600_001,
        policy=p,
    )
    assert never.never_connected
    assert judge_device(
        last_seen_ms=T0, online=True, interval_s=60, created_ms=0, battery=20, now_ms=T0, policy=p
    ).battery_low


def test_policy_defaults_ranges_and_overrides() -> None:
    """Grace defaults to 45 min, stays within 15-75 min; a client's override beats the organisation's."""
    assert DEFAULT_POLICY.dose_grace_s == 45 * 60
    with pytest.raises(PolicyError, match="dose_grace_s"):
        merge_policy(json.dumps({"dose_grace_s": 5 * 60}))
    with pytest.raises(PolicyError, match="unknown"):
        merge_policy(json.dumps({"grace": 1}))
    merged = merge_policy(json.dumps({"dose_grace_s": 75 * 60}), json.dumps({"dose_grace_s": 15 * 60}))
    assert merged.dose_grace_s == 15 * 60


def test_due_times_follow_local_time_across_dst() -> None:
    """08:00 in Amsterdam is 07:00 UTC in winter and 06:00 UTC in summer."""
    winter = int(dt.datetime(2026, 12, 1, 0, 0, tzinfo=dt.UTC).timestamp() * 1000)
    summer = int(dt.datetime(2026, 7, 1, 0, 0, tzinfo=dt.UTC).timestamp() * 1000)
    [w] = due_times("08:00", winter, winter + 86_400_000, AMS)
    [s] = due_times("08:00", summer, summer + 86_400_000, AMS)
    assert dt.datetime.fromtimestamp(w / 1000, dt.UTC).hour == 7
    assert dt.datetime.fromtimestamp(s / 1000, dt.UTC).hour == 6


def _schedule_dose(world: World, at_ms: int) -> None:
    local = dt.datetime.fromtimestamp(at_ms / 1000, AMS).strftime("%H:%M")
    with world.sessions.begin() as s:
        s.add(MedicationDose(client_id=world.client_id, device_id="med", dose_id="morning", at=local))
        s.add(
            Contact(
                client_id=world.client_id,
                name="Dochter Els",
                relation="informal_carer",
                email="els@example.org",
                notify_missed_dose=True,
            )
        )
    with world.sessions.begin() as s:
        assert plan_doses(s, world.now, AMS, {world.client_id: 45 * 60}) >= 1


def test_missed_dose_flow_remind_alert_escalate_and_late_taken(world: World) -> None:
    """Due: a remind command; 45 min untaken: an alert (and the informal carer told); 15 min later the
    district nurse; taken late: the alert is resolved with a note and the dose stays counted as missed."""
    world.set_policy(notify_informal_carer=True)
    due = world.now - world.now % 60_000 + 120_000
    _schedule_dose(world, due)
    world.now = due - 1
    with world.sessions.begin() as s:
        remind = run_due_steps(s, due, EMAIL)
    world.now = due
    assert remind.reminders == [("med", "morning")]
    world.tick(45 * 60)
    [alert] = world.alerts("missed_dose")
    assert alert.priority == 3 and "els@example.org" in world.mails()
    world.tick(15 * 60 + 1)
    assert world.alerts("missed_dose")[0].level == 1 and "wijk@example.org" in world.mails()
    world.event("med", "dose", {"event": "taken", "dose_id": "morning", "due_ts": due})
    alert = world.alerts("missed_dose")[0]
    assert (alert.state, alert.outcome) == ("resolved", "dose_taken_late")
    with world.sessions() as s:
        assert s.scalars(select(DoseInstance.state).where(DoseInstance.due_ms == due)).one() == "taken_late"
        assert any("min after it was due" in n for n in s.scalars(select(AlertNote.text)))


def test_dose_taken_in_time_raises_nothing(world: World) -> None:
    """A dose taken within the grace period raises no alert and sends no remind command."""
    due = world.now - world.now % 60_000 + 120_000
    _schedule_dose(world, due)
    world.now = due
    world.event("med", "dose", {"event": "due", "dose_id": "morning", "due_ts": due})
    world.tick(600)
    world.event("med", "dose", {"event": "taken", "dose_id": "morning", "due_ts": due})
    world.tick(3600)
    assert world.alerts("missed_dose") == []


def test_repeated_misses_raise_the_priority() -> None:
    """First miss normal, second high, third and later critical."""
    assert [miss_priority(n) for n in range(4)] == [3, 2, 1, 1]


def test_visit_overdue_then_arrival(world: World) -> None:
    """A nurse sent with a 30 min target: at 30 min an overdue alert; arrival resolves it."""
    world.event("btn", "alarm", {})
    alarm = world.alerts("alarm")[0]
    with world.sessions.begin() as s:
        apply_action(s, alert_id=alarm.id, action=Action.ACKNOWLEDGE, actor_id=None, now_ms=world.now)
        visit = send_visit(
            s, alert_id=alarm.id, visitor="Wijkverpleegkundige Fatima", user_id=None, now_ms=world.now
        )
        visit_id = visit.id
    world.tick(30 * 60 + 1)
    [overdue] = world.alerts("visit_overdue")
    assert "not yet arrived" in overdue.detail
    with world.sessions.begin() as s:
        confirm_arrival(s, visit_id=visit_id, user_id=None, now_ms=world.now)
    assert world.alerts("visit_overdue")[0].outcome == "nurse_arrived"


def test_stock_low_72_hours(world: World) -> None:
    """A dispenser with 5 doses left at 2 doses a day (60 h) raises a stock alert."""
    with world.sessions.begin() as s:
        for i, at in enumerate(("08:00", "20:00")):
            s.add(MedicationDose(client_id=world.client_id, device_id="med", dose_id=f"d{i}", at=at))
    world.event("med", "dispenser", {"event": "stock_low", "doses_left": 5})
    assert "runs out in about 60 h" in world.alerts("stock_low")[0].detail


def test_device_row_unchanged_by_monitor_without_cause(world: World) -> None:
    """Handling events leaves the device rows alone (liveness is the gateway's)."""
    world.event("btn", "alarm", {})
    with world.sessions() as s:
        assert s.get(Device, "btn").online is None  # type: ignore[union-attr]


def test_escalations_go_before_a_peak_of_dose_reminders(world: World) -> None:
    """600 reminders due at 08:00 and an alarm escalation due a second later: the escalation runs first."""
    from storage.models import EscalationStep

    world.event("btn", "alarm", {})
    with world.sessions.begin() as s:
        s.add_all(
            EscalationStep(
                action="dose_remind",
                level=0,
                due_ms=world.now,
                state="pending",
                created_ms=world.now,
            )
            for i in range(600)
        )
    world.now += 61_000
    with world.sessions.begin() as s:
        run = run_due_steps(s, world.now, EMAIL, limit=100)
    assert run.ran == 100
    assert world.alerts("alarm")[0].level == 1


def test_sweep_finds_silent_never_connected_and_low_battery_devices(world: World) -> None:
    """The device sweep raises offline for a silent and a never-connected device and a battery alert."""
    from monitor.devices import sweep_devices

    with world.sessions.begin() as s:
        other = add_client(s, name="Dhr. Tweede", now_ms=T0)
        add_device(s, device_id="fresh", client_id=other.id, kind="dispenser", now_ms=T0)
        add_device(s, device_id="never", client_id=other.id, kind="dispenser", now_ms=T0 - 7_200_000)
        silent = s.get(Device, "btn")
        assert silent is not None
        silent.last_seen_ms, silent.online, silent.heartbeat_interval_s = T0 - 700_000, True, 300
        fresh = s.get(Device, "fresh")
        assert fresh is not None
        fresh.last_seen_ms, fresh.online, fresh.battery = T0 - 1000, True, 15
        s.get(Device, "med").last_seen_ms = T0  # type: ignore[union-attr]
    with world.sessions.begin() as s:
        assert sweep_devices(s, T0, EMAIL)
    kinds = sorted((a.kind, a.device_id) for a in world.alerts())
    assert kinds == [("battery_low", "fresh"), ("offline", "btn"), ("offline", "never")]
    with world.sessions() as s:
        assert s.get(Device, "btn").online is False  # type: ignore[union-attr]


def test_an_alarm_is_handled_before_a_flood_of_status_reports(world: World) -> None:
    """300 devices' status reports are waiting; an alarm stored after them is turned into an alert first."""
    with world.sessions.begin() as s:
        for i in range(300):
            s.add(
                DeviceEvent(
                    device_id="med",
                    msg_id=f"~status-{i}",
                    kind="status",
                    device_ts_ms=T0,
                    received_ms=T0,
                    payload=json.dumps({"online": True}),
                )
            )
        s.add(
            DeviceEvent(
                device_id="btn",
                msg_id="urgent",
                kind="alarm",
                device_ts_ms=T0,
                received_ms=T0,
                payload=json.dumps({"msg_id": "urgent", "ts": T0}),
            )
        )
    with world.sessions.begin() as s:
        handle_pending_events(s, T0, EMAIL, limit=10)
    assert [a.kind for a in world.alerts()] == ["alarm"]


def test_offline_then_online_in_one_batch_leaves_no_alert_open(world: World) -> None:
    """A Last Will and the reconnect's online report handled in one batch: the offline alert is resolved."""
    with world.sessions.begin() as s:
        for i, online in enumerate((False, True)):
            s.add(
                DeviceEvent(
                    device_id="btn",
                    msg_id=f"~status-{i}",
                    kind="status",
                    device_ts_ms=T0,
                    received_ms=T0,
                    payload=json.dumps({"online": online}),
                )
            )
    world.handle()
    assert [(a.kind, a.state) for a in world.alerts()] == [("offline", "resolved")]


def test_a_cancel_of_the_first_press_never_closes_a_fall_counted_after_it(world: World) -> None:
    """Pendant pressed, then a fall before anyone answered, then cancel of the pendant press: still open."""
    first = world.event("btn", "alarm", {"alarm_kind": "pendant"})
    world.tick(3)
    world.event("btn", "alarm", {"alarm_kind": "fall"})
    world.tick(3)
    world.event("btn", "alarm", {"cancels": first})
    [alarm] = world.alerts("alarm")
    assert (alarm.state, alarm.count, alarm.detail) == ("open", 2, "Fall detected")
    with world.sessions() as s:
        assert any("stays open" in t for t in s.scalars(select(AlertNote.text)))


def test_a_window_never_holds_back_an_overdue_visit(world: World) -> None:
    """The client is in a window, but a nurse sent after her alarm is overdue: that is not held back."""
    with world.sessions.begin() as s:
        s.add(
            MaintenanceWindow(
                client_id=world.client_id, starts_ms=T0 - 1, ends_ms=T0 + 10**9, reason="hospital"
            )
        )
    world.event("btn", "alarm", {})
    alarm = world.alerts("alarm")[0]
    with world.sessions.begin() as s:
        send_visit(s, alert_id=alarm.id, visitor="Wijk", user_id=None, now_ms=world.now, target_s=600)
    world.tick(11 * 60)
    assert [a.kind for a in world.alerts("visit_overdue")] == ["visit_overdue"]


def test_a_low_battery_closed_by_a_person_is_not_raised_again_at_the_next_sweep(world: World) -> None:
    """A nurse closes the battery alert (the client will charge it): not raised again 10 s later."""
    with world.sessions.begin() as s:
        device = s.get(Device, "btn")
        assert device is not None
        device.battery, device.last_seen_ms, device.online = 10, world.now, True
    with world.sessions.begin() as s:
        sweep_devices(s, world.now, EMAIL)
    [alert] = world.alerts("battery_low")
    with world.sessions.begin() as s:
        apply_action(
            s, alert_id=alert.id, action=Action.RESOLVE, actor_id=None, now_ms=world.now, outcome="other"
        )
    world.now += 10_000
    with world.sessions.begin() as s:
        sweep_devices(s, world.now, EMAIL)
    assert [a.state for a in world.alerts("battery_low")] == ["resolved"]
    world.now += 13 * 3600 * 1000
    with world.sessions.begin() as s:
        device = s.get(Device, "btn")
        assert device is not None
        device.last_seen_ms = world.now
        sweep_devices(s, world.now, EMAIL)
    assert [a.state for a in world.alerts("battery_low")] == ["resolved", "open"]


def test_a_device_still_offline_after_a_person_closed_its_alert_is_raised_again(world: World) -> None:
    """Offline by Last Will; a nurse closes the alert; the button is still offline a detection time later."""
    world.event("btn", "status", {"online": False})
    with world.sessions.begin() as s:
        device = s.get(Device, "btn")
        assert device is not None
        device.online, device.online_changed_ms, device.heartbeat_interval_s = False, world.now, 30
    [alert] = world.alerts("offline")
    with world.sessions.begin() as s:
        apply_action(
            s, alert_id=alert.id, action=Action.RESOLVE, actor_id=None, now_ms=world.now, outcome="other"
        )
    world.now += 50_000
    with world.sessions.begin() as s:
        sweep_devices(s, world.now, EMAIL)
    assert [a.state for a in world.alerts("offline")] == ["resolved"]
    world.now += 20_000
    with world.sessions.begin() as s:
        sweep_devices(s, world.now, EMAIL)
    assert [a.state for a in world.alerts("offline")] == ["resolved", "open"]


def test_a_dispenser_schedule_is_adopted_unless_a_newer_one_is_on_its_way(world: World) -> None:
    """The dispenser's own report becomes the schedule (planned at once); a report older than a set_schedule
    still awaiting its answer is not; a refused set_schedule does not block the dispenser's real schedule."""
    from care.commands import new_command

    def report(version: int, at: str) -> None:
        world.event("med", "schedule", {"version": version, "doses": [{"dose_id": "ochtend", "at": at}]})

    def schedule() -> list[str]:
        with world.sessions() as s:
            return [
                d.at
                for d in s.scalars(select(MedicationDose).where(MedicationDose.client_id == world.client_id))
            ]

    report(1, "08:00")
    assert schedule() == ["08:00"]
    with world.sessions() as s:
        assert s.scalar(select(func.count()).select_from(DoseInstance).where(DoseInstance.state == "pending"))
    with world.sessions.begin() as s:
        record = new_command(
            s, device_id="med", command="set_schedule", args={"version": 5, "doses": []}, now_ms=world.now
        )
        cmd_id = record.id
    report(2, "09:00")  # from before our version 5 arrived
    assert schedule() == ["08:00"]
    with world.sessions.begin() as s:
        from care.commands import apply_command_ack

        apply_command_ack(s, "med", cmd_id, "refused", world.now)
    report(3, "09:30")  # the device refused version 5: what it holds is the schedule
    assert schedule() == ["09:30"]
