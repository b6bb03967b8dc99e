"""What a stored device event means (``care.rules.decide_event``): every effect, decided on typed messages."""

from __future__ import annotations

from hypothesis import given
from test_protocol import messages

from care.policy import DEFAULT_POLICY
from care.rules import (
    AdoptSchedule,
    CancelAlarm,
    DoseReport,
    EventContext,
    OpenAlert,
    RecordCommandAck,
    ResolveAlerts,
    decide_event,
)
from protocol.stored import StoredMessage
from protocol.v1 import Alarm, CommandAck, DispenserEvent, Fault, Heartbeat, ScheduledDose, ScheduleReport

EFFECTS = (OpenAlert, ResolveAlerts, CancelAlarm, DoseReport, AdoptSchedule, RecordCommandAck)


@given(messages.filter(lambda m: not isinstance(m, Heartbeat)))
def test_every_stored_message_has_a_meaning(message: StoredMessage) -> None:
    """The table knows every message a device_events row can hold, and answers only with effects."""
    for device_kind in ("alarm_button", "dispenser", "probe"):
        effects = decide_event(message, EventContext(device_kind, doses_per_day=3))
        assert all(isinstance(effect, EFFECTS) for effect in effects)


def test_stock_low_is_judged_by_the_clients_schedule() -> None:
    """A stock report warns only when the doses left last less than the policy's warning time."""
    five_left = DispenserEvent("med", "s1", 1, "stock_low", doses_left=5)
    assert decide_event(five_left, EventContext("dispenser", doses_per_day=3)) == [
        OpenAlert("stock_low", 3, "Medication runs out in about 40 h (5 doses)")
    ]
    assert decide_event(five_left, EventContext("dispenser", doses_per_day=1)) == []  # 120 h


def test_stock_low_without_a_schedule_counts_one_dose_a_day() -> None:
    """A client with no planned doses is judged at one a day, so a low stock still warns."""
    event = DispenserEvent("med", "s1", 1, "stock_low", doses_left=2)
    [spec] = decide_event(event, EventContext("dispenser", doses_per_day=0, policy=DEFAULT_POLICY))
    assert spec == OpenAlert("stock_low", 3, "Medication runs out in about 48 h (2 doses)")


def test_a_command_answer_is_recorded() -> None:
    """A cmdack becomes the effect that settles its command, and raises no alert."""
    ack = CommandAck("med", "k1", 1, "cmd-7", "refused", reason="busy")
    assert decide_event(ack, EventContext("dispenser")) == [RecordCommandAck("cmd-7", "refused")]


def test_a_schedule_report_is_adopted_as_reported() -> None:
    """A schedule report becomes AdoptSchedule with its doses as (dose_id, at, label)."""
    report = ScheduleReport(
        "med", "r1", 1, 4, (ScheduledDose("ochtend", "08:00"), ScheduledDose("a", "20:00", "x"))
    )
    assert decide_event(report, EventContext("dispenser")) == [
        AdoptSchedule(4, (("ochtend", "08:00", ""), ("a", "20:00", "x")))
    ]


def test_an_alarm_under_a_reused_msg_id_also_flags_the_device() -> None:
    """The alarm is raised all the same, with a device fault naming the reused msg_id."""
    effects = decide_event(Alarm("btn", "~reused-ab", 1), EventContext("alarm_button", reused_msg_id="a1"))
    assert [e.kind for e in effects if isinstance(e, OpenAlert)] == ["alarm", "device_fault"]
    assert "(a1)" in effects[1].detail  # type: ignore[union-attr]


def test_the_probe_means_only_its_hidden_alert() -> None:
    """The service's own probe: an alarm counts on the hidden probe alert; nothing else means anything."""
    assert decide_event(Alarm("probe", "p1", 1), EventContext("probe")) == [
        OpenAlert("probe", 4, "End-to-end probe alarm")
    ]
    assert decide_event(Fault("probe", "p2", 1, "hardware"), EventContext("probe")) == []
