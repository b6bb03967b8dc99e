"""Medication: due doses planned from the client's schedule, reminders, missed doses and late doses.

A dose instance is created for every scheduled time in the coming day, with two timers: at the due time
(remind the client if the dispenser did not say it did) and at due + grace (missed if not taken). A dose
taken after its grace period stays counted as missed — taken late, never a double dose — and resolves the
missed-dose alert with a note. Each missed dose is an alert of its own (keyed by its instance): a late dose
resolves its own alert, never another dose's.

A schedule change (the console, the API, or the dispenser's own ``schedule`` report) re-plans the client's
instances in the same transaction (``replan_client``): added doses are watched from their next due time,
removed or moved ones are cancelled with their timers (no reminder, no miss).

An instance's lifecycle (pending, taken, missed, taken_late, cancelled) is ``care.lifecycles.DOSE``; which
instance a dispenser's report is about is ``care.dose_match``'s rule. An instance's two timers name it by
foreign key (``escalation_steps.dose_instance_id``).
"""

from __future__ import annotations

import datetime as dt
import json
from zoneinfo import ZoneInfo

from sqlalchemy import delete, func, or_, select
from sqlalchemy.orm import Session

from storage.commands_models import CommandRecord
from storage.models import (
    Alert,
    AlertNote,
    Contact,
    Device,
    DoseInstance,
    EscalationStep,
    MedicationDose,
    Notification,
)

from .alert_store import open_alert, resolve_key
from .dose_match import match_bounds, nearest_instance, report_target
from .lifecycles import DOSE, DoseEvent, DoseState, NotificationState, StepAction
from .policy import Policy
from .rules import AdoptSchedule, DoseReport, OpenAlert, open_key
from .step_store import add_step, cancel_steps

_DEFAULT_TZ = ZoneInfo("Europe/Amsterdam")

__all__ = [
    "adopt_schedule",
    "apply_report",
    "check_missed",
    "due_times",
    "miss_priority",
    "plan_doses",
    "remind_if_needed",
    "replan_client",
]

# How far ahead dose instances (and their timers) are created.
PLAN_AHEAD_MS = 26 * 3600 * 1000


def _subject(instance_id: int) -> str:
    """What a scheduled dose's missed-dose alert is about (its repeats are counted on it; taken late
    resolves it)."""
    return f"dose:{instance_id}"


def _device_subject(dose_id: str) -> str:
    """What a missed-dose alert is about when only the dispenser knows the dose (central's reports read
    it)."""
    return f"device-dose:{dose_id}"


def due_times(at: str, now_ms: int, until_ms: int, tz: ZoneInfo) -> list[int]:
    """Every moment in [now_ms, until_ms) at which local time ``at`` (HH:MM) occurs in ``tz``."""
    hour, minute = (int(x) for x in at.split(":"))
    day = dt.datetime.fromtimestamp(now_ms / 1000, tz).date()
    out = []
    for offset in range(3):
        local = dt.datetime.combine(day + dt.timedelta(days=offset), dt.time(hour, minute), tz)
        ms = int(local.timestamp() * 1000)
        if now_ms <= ms < until_ms:
            out.append(ms)
    return out


def miss_priority(recent_misses: int) -> int:
    """Repeated misses raise the priority: the first is normal (3), the second high (2), then critical (1)."""
    return max(1, 3 - recent_misses)


def plan_doses(
    session: Session, now_ms: int, tz: ZoneInfo, grace_of: dict[int, int], client_id: int | None = None
) -> int:
    """Create the dose instances (and their timers) due in the coming day; return how many are new."""
    created = 0
    query = select(MedicationDose)
    if client_id is not None:
        query = query.where(MedicationDose.client_id == client_id)
    for dose in session.scalars(query):
        grace_ms = grace_of.get(dose.client_id, 45 * 60) * 1000
        for due in due_times(dose.at, now_ms, now_ms + PLAN_AHEAD_MS, tz):
            exists = session.scalars(
                select(DoseInstance.id).where(
                    DoseInstance.client_id == dose.client_id,
                    DoseInstance.dose_id == dose.dose_id,
                    DoseInstance.due_ms == due,
                )
            ).first()
            if exists is not None:
                continue
            _add_instance(session, dose, due, grace_ms, now_ms)
            created += 1
    return created


def _add_instance(session: Session, dose: MedicationDose, due: int, grace_ms: int, now_ms: int) -> None:
    instance = DoseInstance(
        client_id=dose.client_id,
        device_id=dose.device_id,
        dose_id=dose.dose_id,
        due_ms=due,
        state=DoseState.PENDING,
        reminded=False,
    )
    session.add(instance)
    session.flush()
    add_step(session, action=StepAction.DOSE_REMIND, due_ms=due, now_ms=now_ms, dose_instance_id=instance.id)
    add_step(
        session,
        action=StepAction.DOSE_CHECK,
        due_ms=due + grace_ms,
        now_ms=now_ms,
        dose_instance_id=instance.id,
    )


def replan_client(session: Session, client_id: int, now_ms: int, tz: ZoneInfo, grace_ms: int) -> int:
    """Make the client's pending dose instances follow the schedule now; return how many were cancelled.

    Called in the transaction that changed the schedule: a pending instance whose dose was removed, or
    whose time changed, is cancelled with its timers; the doses of the schedule are planned from now on.
    """
    wanted = {
        (d.dose_id, d.at)
        for d in session.scalars(select(MedicationDose).where(MedicationDose.client_id == client_id))
    }
    cancelled = 0
    for instance in session.scalars(
        select(DoseInstance).where(
            DoseInstance.client_id == client_id, DOSE.where(DoseInstance.state, DoseEvent.CANCEL)
        )
    ):
        local_at = dt.datetime.fromtimestamp(instance.due_ms / 1000, tz).strftime("%H:%M")
        if (instance.dose_id, local_at) in wanted:
            continue
        instance.state = DOSE.transition(instance.state, DoseEvent.CANCEL)
        cancel_steps(session, EscalationStep.dose_instance_id == instance.id, now_ms)
        cancelled += 1
    plan_doses(session, now_ms, tz, {client_id: grace_ms // 1000}, client_id=client_id)
    return cancelled


def adopt_schedule(
    session: Session, device: Device, report: AdoptSchedule, now_ms: int, tz: ZoneInfo, grace_ms: int
) -> bool:
    """Take the schedule a dispenser reports as the client's, unless a newer one is on its way to it.

    The dispenser is what actually dispenses, so what it holds is what will be due — a change made on the
    device itself included. A report older than the last ``set_schedule`` we sent is the device's state
    before that command arrived: it is not adopted (the command's own report will follow).
    """
    sent = max(
        (
            int(json.loads(args).get("version", 0))
            for args in session.scalars(
                select(CommandRecord.args).where(
                    CommandRecord.device_id == device.id,
                    CommandRecord.command == "set_schedule",
                    # Only a schedule the device took or may still take (not refused, failed, never sent).
                    or_(CommandRecord.result.is_(None), CommandRecord.result == "done"),
                )
            )
        ),
        default=None,
    )
    if sent is not None and report.version < sent:
        return False
    current = {
        (d.dose_id, d.at, d.label or "")
        for d in session.scalars(select(MedicationDose).where(MedicationDose.client_id == device.client_id))
    }
    if current == set(report.doses):
        return False
    session.execute(delete(MedicationDose).where(MedicationDose.client_id == device.client_id))
    for dose_id, at, label in report.doses:
        session.add(
            MedicationDose(
                client_id=device.client_id, device_id=device.id, dose_id=dose_id, at=at, label=label
            )
        )
    session.flush()
    replan_client(session, device.client_id, now_ms, tz, grace_ms)
    return True


def remind_if_needed(session: Session, instance_id: int) -> tuple[str, str] | None:
    """At the due time: (device id, dose id) to send a remind command to, if the device showed none."""
    instance = session.get(DoseInstance, instance_id)
    if (
        instance is None
        or instance.state != DoseState.PENDING
        or instance.reminded
        or instance.device_id is None
    ):
        return None
    instance.reminded = True
    return instance.device_id, instance.dose_id


def check_missed(
    session: Session,
    instance_id: int,
    now_ms: int,
    policy: Policy,
    channels: frozenset[str],
    tz: ZoneInfo = _DEFAULT_TZ,
) -> bool:
    """At due + grace: a dose still not taken is missed; open (or count on) the missed-dose alert."""
    instance = session.get(DoseInstance, instance_id)
    missed = DOSE.after(instance.state, DoseEvent.MISS) if instance is not None else None
    if instance is None or missed is None:
        return False
    instance.state = missed
    recent = (
        session.scalar(
            select(func.count())
            .select_from(DoseInstance)
            .where(
                DoseInstance.client_id == instance.client_id,
                DoseInstance.state.in_((DoseState.MISSED, DoseState.TAKEN_LATE)),
                DoseInstance.due_ms > now_ms - policy.repeat_miss_window_s * 1000,
                DoseInstance.id != instance.id,
            )
        )
        or 0
    )
    local = dt.datetime.fromtimestamp(instance.due_ms / 1000, tz).strftime("%H:%M")  # the client's clock
    spec = OpenAlert(
        "missed_dose",
        miss_priority(recent),
        f"Dose {instance.dose_id} due {local} not taken",
        subject=_subject(instance.id),
    )
    alert = open_alert(
        session, instance.client_id, instance.device_id, spec, now_ms, now_ms, policy, channels
    )
    if alert is not None:
        instance.alert_id = alert.id
        if policy.notify_informal_carer and "email" in channels:
            _tell_informal_carers(session, alert, instance, now_ms)
    return True


def apply_report(
    session: Session,
    device: Device,
    report: DoseReport,
    at_ms: int,
    now_ms: int,
    policy: Policy,
    channels: frozenset[str],
    tz: ZoneInfo = _DEFAULT_TZ,
) -> bool:
    """Apply a dispenser's dose report (due, taken, missed); return True when an alert changed."""
    instance = _match(session, device.client_id, report, at_ms)
    if instance is None:
        # A dose the schedule does not know: the device's own word is all there is.
        if report.event == "missed":
            spec = OpenAlert(
                "missed_dose",
                3,
                f"Dose {report.dose_id} not taken (reported by the dispenser)",
                subject=_device_subject(report.dose_id),
            )
            return (
                open_alert(session, device.client_id, device.id, spec, at_ms, now_ms, policy, channels)
                is not None
            )
        if report.event == "taken":
            return resolve_key(
                session,
                open_key("missed_dose", device.client_id, device.id, _device_subject(report.dose_id)),
                "dose_taken_late",
                f"Dose {report.dose_id} taken",
                now_ms,
            )
        return False
    if report.event == "due":
        instance.reminded = True
        return False
    if report.event == "missed":
        return check_missed(session, instance.id, now_ms, policy, channels, tz)
    # taken: on time, or late (still counted as missed); taken twice, or a cancelled dose, changes nothing
    taken = DOSE.after(instance.state, DoseEvent.TAKE)
    if taken is None:
        return False
    instance.state, instance.taken_ms = taken, at_ms
    if taken is not DoseState.TAKEN_LATE:
        return False
    late_min = (at_ms - instance.due_ms) // 60_000
    return resolve_key(
        session,
        open_key("missed_dose", device.client_id, None, _subject(instance.id)),
        "dose_taken_late",
        f"Dose {instance.dose_id} taken {late_min} min after it was due",
        now_ms,
    )


def _match(session: Session, client_id: int, report: DoseReport, at_ms: int) -> DoseInstance | None:
    """The scheduled instance the report is about (``care.dose_match``), or None."""
    target = report_target(report.due_ts, at_ms)
    low, high = match_bounds(target)
    candidates = session.scalars(
        select(DoseInstance).where(
            DoseInstance.client_id == client_id,
            DoseInstance.dose_id == report.dose_id,
            DoseInstance.due_ms > low,
            DoseInstance.due_ms < high,
        )
    )
    return nearest_instance(candidates, target, due_ms=lambda d: d.due_ms)


def _tell_informal_carers(session: Session, alert: Alert, instance: DoseInstance, now_ms: int) -> None:
    for contact in session.scalars(
        select(Contact).where(Contact.client_id == instance.client_id, Contact.notify_missed_dose.is_(True))
    ):
        if not contact.email:
            continue
        session.add(
            Notification(
                alert_id=alert.id,
                level=0,
                channel="email",
                recipient=contact.email,
                user_id=None,
                subject=f"[carealarm] A dose was not taken: {instance.dose_id}",
                body=f"Dear {contact.name},\n\nthe dose '{instance.dose_id}' was not taken in time. "
                "The care station has been told and will follow up.\n",
                state=NotificationState.PENDING,
                attempts=0,
                created_ms=now_ms,
                next_try_ms=now_ms,
            )
        )
        session.add(
            AlertNote(
                alert_id=alert.id, user_id=None, at_ms=now_ms, text=f"Informal carer {contact.name} told"
            )
        )
