"""What a device event means for the care station, and how each kind of alert escalates — pure tables.

``decide_event`` turns one stored device event, decoded into its typed message, into every effect it has
(open an alert, resolve alerts, cancel an alarm, report or plan a dose, warn of low stock, record a command's
answer), from a table keyed by the message's type; ``steps_for`` says when an open alert escalates, and
``LADDER`` whom each level pages. The monitor's database adapter applies the effects and decides nothing;
nothing here reads a clock or a database.

What an alert is about decides which repeats are counted on it (``open_key``, a dedup key):

- a device-state alert (offline, battery, power, tamper, fault, dispenser, stock) belongs to its device:
  one open per device and kind, resolved only by that device;
- a missed dose belongs to its dose instance, a visit-overdue alert to its visit;
- an alarm belongs to the client *while it is open*: presses before anyone answered are counted on it (and
  ring the console again); once a nurse has acknowledged it the key is cleared, so the next press opens a
  new alert linked to the running one — a new press is always news, gets its own answer time and its own
  escalation timers.

Nothing quiets an alarm: ``quiet_in_window`` says which alerts a maintenance window may hold back.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from protocol.stored import StoredMessage
from protocol.v1 import (
    Alarm,
    AlarmCancel,
    CommandAck,
    DispenserEvent,
    DoseEvent,
    Fault,
    ScheduleReport,
    Status,
)

from .policy import DEFAULT_POLICY, Policy

__all__ = [
    "LADDER",
    "AdoptSchedule",
    "CancelAlarm",
    "DoseReport",
    "Effect",
    "EventContext",
    "OpenAlert",
    "RecordCommandAck",
    "ResolveAlerts",
    "StepPlan",
    "decide_event",
    "offline_priority",
    "open_key",
    "quiet_in_window",
    "stock_alert",
    "steps_for",
]


@dataclass(frozen=True, slots=True)
class OpenAlert:
    kind: str
    priority: int  # 1 critical, 2 high, 3 normal, 4 low
    detail: str
    subject: str | None = None


@dataclass(frozen=True, slots=True)
class ResolveAlerts:
    """Resolve the device's open alert of ``kind`` (the problem went away by itself)."""

    kind: str
    outcome: str
    note: str


@dataclass(frozen=True, slots=True)
class CancelAlarm:
    """The client cancelled the alarm with this msg_id on the device."""

    alarm_msg_id: str


@dataclass(frozen=True, slots=True)
class DoseReport:
    """The dispenser reports a dose was shown as due, taken or not taken."""

    dose_id: str
    event: str
    due_ts: int | None


@dataclass(frozen=True, slots=True)
class AdoptSchedule:
    """The dispenser reports the schedule it holds (after a set_schedule, or one changed on the device)."""

    version: int
    doses: tuple[tuple[str, str, str], ...]  # (dose_id, at "HH:MM", label)


@dataclass(frozen=True, slots=True)
class RecordCommandAck:
    """The device answered a command it was sent (done, failed or refused)."""

    cmd_id: str
    result: str


Effect = OpenAlert | ResolveAlerts | CancelAlarm | DoseReport | AdoptSchedule | RecordCommandAck


@dataclass(frozen=True, slots=True)
class EventContext:
    """What an event means besides the event itself: the device that sent it and its client's plan."""

    device_kind: str
    # An alarm stored under a derived msg_id: the one the device had used before for another message.
    reused_msg_id: str | None = None
    # The client's planned doses a day, and policy: a stock report is judged by how long the stock lasts.
    doses_per_day: int = 0
    policy: Policy = DEFAULT_POLICY


_ALARM_LABELS: Final = {
    "button": "Alarm button pressed",
    "pendant": "Pendant alarm",
    "fall": "Fall detected",
    "smoke": "Smoke detector",
    "bed_exit": "Out of bed",
    "door": "Door opened",
    "other": "Alarm",
}

# An offline alarm button leaves the client unprotected (urgent); a dispenser less so; video least.
_OFFLINE_PRIORITY: Final = {"alarm_button": 2, "dispenser": 3, "video": 4}

_DISPENSER: Final[dict[str, tuple[str, int, str]]] = {
    "dispense_error": ("dispense_error", 2, "The dispenser could not dispense a dose"),
    "tamper": ("tamper", 3, "The dispenser reports tampering"),
    "lid_open": ("tamper", 3, "The dispenser lid is open"),
}

_FAULTS: Final[dict[str, tuple[str, int, str] | None]] = {
    "power_lost": ("power", 3, "Mains power lost; running on battery"),
    "battery_low": ("battery_low", 4, "Device battery low"),
    "hardware": ("device_fault", 3, "Device hardware fault"),
    "reboot": None,
    "network": None,
    "power_restored": None,
}


def offline_priority(device_kind: str) -> int:
    return _OFFLINE_PRIORITY.get(device_kind, 3)


# Kinds about one dose, visit ...: the subject is what repeats are counted on, whichever device reported.
_SUBJECT_KINDS: Final = frozenset({"missed_dose", "visit_overdue"})


def open_key(kind: str, client_id: int, device_id: str | None, subject: str | None) -> str:
    """The dedup key of an alert: a repeat with the same key is counted on the open alert."""
    if kind == "alarm":
        return f"alarm:c{client_id}"
    if kind in _SUBJECT_KINDS and subject:
        return f"{kind}:c{client_id}:{subject}"
    return f"{kind}:c{client_id}:d{device_id or '-'}"


# What a maintenance window (client in hospital, on holiday; a device being serviced) may hold back: the
# state of devices and of medication. Never an alarm, never a visit that is overdue.
_QUIET_IN_WINDOW: Final = frozenset(
    {
        "offline",
        "battery_low",
        "power",
        "tamper",
        "device_fault",
        "dispense_error",
        "stock_low",
        "missed_dose",
    }
)


def quiet_in_window(spec: OpenAlert) -> bool:
    """May a maintenance window hold this alert back? Device-state and dose alerts only."""
    return spec.kind in _QUIET_IN_WINDOW


def decide_event(event: StoredMessage, context: EventContext) -> list[Effect]:
    """Return every effect of one stored device event; an event that means nothing returns []."""
    if context.device_kind == "probe":
        # The service's own end-to-end test alarm: counted on one hidden alert (never shown, never paged),
        # whose change on the feed tells the watchdog that the whole chain carried it. A probe sends
        # nothing else; anything else under its name means nothing.
        return [OpenAlert("probe", 4, "End-to-end probe alarm")] if event.kind == "alarm" else []
    return _DECIDERS[type(event)](event, context)


def _alarm(event: Alarm, context: EventContext) -> list[Effect]:
    effects: list[Effect] = [OpenAlert("alarm", 1, _ALARM_LABELS.get(event.alarm_kind, "Alarm"))]
    if context.reused_msg_id is not None:
        # The alarm is taken all the same; the device must be fixed before its next alarm is lost.
        effects.append(
            OpenAlert(
                "device_fault",
                3,
                f"The device sent a different alarm under a msg_id it had used before "
                f"({context.reused_msg_id}): its message counter may have reset; check its firmware",
            )
        )
    return effects


def _alarm_cancel(event: AlarmCancel, context: EventContext) -> list[Effect]:
    return [CancelAlarm(event.cancels)]


def _dose(event: DoseEvent, context: EventContext) -> list[Effect]:
    return [DoseReport(event.dose_id, event.event, event.due_ts)]


def _schedule(event: ScheduleReport, context: EventContext) -> list[Effect]:
    return [AdoptSchedule(event.version, tuple((d.dose_id, d.at, d.label or "") for d in event.doses))]


def _status(event: Status, context: EventContext) -> list[Effect]:
    if event.online:
        return [ResolveAlerts("offline", "back_online", "The device is back online")]
    detail = "Device went offline (connection lost or switched off)"
    return [OpenAlert("offline", offline_priority(context.device_kind), detail)]


def _dispenser(event: DispenserEvent, context: EventContext) -> list[Effect]:
    if event.event == "stock_low":
        # The protocol requires doses_left on stock_low; a client without a schedule counts one dose a day.
        spec = stock_alert(event.doses_left or 0, context.doses_per_day or 1, context.policy)
        return [] if spec is None else [spec]
    alert_kind, priority, detail = _DISPENSER[event.event]
    return [OpenAlert(alert_kind, priority, detail + (f": {event.detail}" if event.detail else ""))]


def _fault(event: Fault, context: EventContext) -> list[Effect]:
    if event.fault == "power_restored":
        return [ResolveAlerts("power", "power_restored", "Mains power restored")]
    spec = _FAULTS.get(event.fault)
    if spec is None:
        return []
    alert_kind, priority, detail = spec
    if alert_kind == "power" and context.device_kind == "alarm_button":
        priority = 2
    return [OpenAlert(alert_kind, priority, detail)]


def _command_ack(event: CommandAck, context: EventContext) -> list[Effect]:
    return [RecordCommandAck(event.cmd_id, event.result)]


# What each kind of event means: one decider per typed message (protocol.stored.StoredMessage).
_DECIDERS: Final[dict[type[StoredMessage], Callable[[Any, EventContext], list[Effect]]]] = {
    Alarm: _alarm,
    AlarmCancel: _alarm_cancel,
    DoseEvent: _dose,
    ScheduleReport: _schedule,
    Status: _status,
    DispenserEvent: _dispenser,
    Fault: _fault,
    CommandAck: _command_ack,
}


def stock_alert(doses_left: int, doses_per_day: int, policy: Policy) -> OpenAlert | None:
    """Warn when the doses left run out within ``policy.stock_warning_s``."""
    if doses_per_day <= 0:
        return None
    seconds_left = doses_left * 86_400 // doses_per_day
    if seconds_left > policy.stock_warning_s:
        return None
    return OpenAlert(
        "stock_low", 3, f"Medication runs out in about {seconds_left // 3600} h ({doses_left} doses)"
    )


@dataclass(frozen=True, slots=True)
class StepPlan:
    action: str  # escalate
    level: int
    due_ms: int


def steps_for(kind: str, priority: int, opened_ms: int, policy: Policy) -> list[StepPlan]:
    """The escalation timers an alert gets when it opens (all cancelled when it is acknowledged)."""
    if kind == "alarm":
        return [
            StepPlan("escalate", 1, opened_ms + policy.alarm_first_escalation_s * 1000),
            StepPlan("escalate", 2, opened_ms + policy.alarm_second_escalation_s * 1000),
        ]
    if kind == "missed_dose":
        return [StepPlan("escalate", 1, opened_ms + policy.dose_alert_escalation_s * 1000)]
    if kind == "offline" and priority <= 2:
        return [StepPlan("escalate", 1, opened_ms + policy.offline_button_escalation_s * 1000)]
    return []


# Whom each escalation level pages (roles on duty). Level 0 is the console queue itself, except where a
# kind pages someone the moment it opens.
LADDER: Final[dict[tuple[str, int], tuple[str, ...]]] = {
    ("alarm", 1): ("care_nurse", "supervisor"),
    ("alarm", 2): ("supervisor", "district_nurse"),
    ("missed_dose", 1): ("district_nurse",),
    ("offline", 1): ("supervisor",),
    ("visit_overdue", 0): ("supervisor", "district_nurse"),
}
