"""Reports for supervisors and admins: alarm answer times, medication adherence and device uptime.

Each report is JSON, or CSV with ``?format=csv``. The routes read rows and hand them to the pure
:mod:`central.report_calc`; the window is ``since``/``until`` (a date, an ISO date-time or epoch ms).
Each JSON answer carries the definitions of its figures (``definitions``), as the page shows them.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastapi import APIRouter, Depends, Query, Response
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from storage.models import Alert, Client, Device, DeviceEvent, DoseInstance, ServiceRun, User

from . import audit
from . import report_calc as calc
from .auth import SignedInUser
from .deps import AuditedSession, Ctx, require
from .errors import NotFound, Unprocessable
from .ids import MAX_ID
from .report_outcomes import outcome_counts
from .report_schemas import CSV, AdherenceReport, AnswerTimesReport, UptimeReport

__all__ = ["router"]

router = APIRouter(tags=["reports"])
# A year of alarms is still a quick query; longer windows are an export job, not a page.
_MAX_WINDOW_MS = 366 * 86_400_000
_DEFAULT_WINDOW_MS = 7 * 86_400_000
# Spreadsheets run cells that start with these as formulas; a client's or nurse's name must not.
# A gateway not heard from for 30 s is down for the reports (a few late beats are a busy database or a
# garbage-collection pause, not an outage); the live health banner judges far sooner (central/health.py).
_SERVICE_GRACE_MS = 30_000
# The subject of a missed-dose alert the monitor opened on a dispenser's word alone (care/doses.py).
_DEVICE_DOSE = "device-dose:"
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


# Reports show every nurse's answer times and every client's medication: supervision, not the console.
ReportUser = Annotated[SignedInUser, Depends(require("report.read"))]
Format = Annotated[Literal["json", "csv"], Query(description="json (default) or csv (a download)")]
Since = Annotated[str | None, Query(description="start: YYYY-MM-DD, ISO date-time or epoch ms")]
Until = Annotated[str | None, Query(description="end: YYYY-MM-DD (that whole day), ISO date-time or ms")]
Tz = Annotated[str, Query(description="IANA time zone for days and dates, e.g. Europe/Amsterdam")]


def _zone(name: str) -> tzinfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise Unprocessable(f"unknown time zone {name[:60]!r}") from None


# A query value longer than this is no date, date-time or epoch ms ("2026-12-01T08:00:00.000+01:00" is 29).
_VALUE_CHARS = 40
# Reports cover what this service can have stored: from 1970 to the end of 2999 (epoch ms); past that,
# ``datetime`` and the database's BIGINT overflow.
_EARLIEST_MS = 0
_LATEST_MS = 32_503_680_000_000  # 3000-01-01T00:00:00Z


def _instant(value: str, tz: tzinfo, end: bool, name: str) -> int:
    """Epoch ms of a query value; a bare date is its midnight, or for ``until`` the next midnight.

    422 for anything else: only ASCII digits make epoch ms ("²" is a digit to ``str.isdigit``), the text is
    at most ``_VALUE_CHARS`` long (``int()`` of thousands of digits is refused by Python), and the instant
    lies between 1970 and 3000 ("9999-12-31" as ``until`` overflows ``date``).
    """
    text = value.strip()
    if len(text) > _VALUE_CHARS:
        raise Unprocessable(f"{name} is at most {_VALUE_CHARS} characters")
    if text.isascii() and text.isdigit():
        ms = int(text)
    else:
        ms = _parse_moment(text, tz, end, name)
    if not _EARLIEST_MS <= ms <= _LATEST_MS:
        raise Unprocessable(f"{name} must lie between 1970-01-01 and 2999-12-31")
    return ms


def _parse_moment(text: str, tz: tzinfo, end: bool, name: str) -> int:
    try:
        if len(text) == 10:
            day = date.fromisoformat(text) + timedelta(days=1 if end else 0)
            return int(datetime.combine(day, time(), tz).timestamp() * 1000)
        moment = datetime.fromisoformat(text)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=tz)
        return int(moment.timestamp() * 1000)
    except ValueError:
        raise Unprocessable(f"{name} must be YYYY-MM-DD, an ISO date-time or epoch milliseconds") from None
    except OverflowError:
        raise Unprocessable(f"{name} must lie between 1970-01-01 and 2999-12-31") from None


def window(ctx: Ctx, since: Since = None, until: Until = None, tz: Tz = "UTC") -> tuple[int, int, tzinfo]:
    """The report's ``[since_ms, until_ms)`` and time zone; default the last seven days."""
    zone = _zone(tz)
    until_ms = _instant(until, zone, True, "until") if until else ctx.clock_ms()
    since_ms = _instant(since, zone, False, "since") if since else until_ms - _DEFAULT_WINDOW_MS
    if since_ms >= until_ms:
        raise Unprocessable("since must be before until")
    if until_ms - since_ms > _MAX_WINDOW_MS:
        raise Unprocessable("a report covers at most 366 days")
    return since_ms, until_ms, zone


Window = Annotated[tuple[int, int, tzinfo], Depends(window)]


def _audit(
    session: Session,
    ctx: Ctx,
    user: SignedInUser,
    report: str,
    format: str,
    span: tuple[int, int, tzinfo],
    client_id: int | None = None,
) -> None:
    """A report shows clients' and nurses' data: who read which, for which window, is on the record."""
    detail = f"{report} {format} since_ms={span[0]} until_ms={span[1]}"
    audit.record(session, user, "report.read", now_ms=ctx.clock_ms(), client_id=client_id, detail=detail)


# -- answer times -------------------------------------------------------------------------------------


@router.get("/api/reports/answer-times", response_model=AnswerTimesReport, responses=CSV)
def answer_times(
    ctx: Ctx, session: AuditedSession, user: ReportUser, span: Window, format: Format = "json"
) -> Any:
    """Alarms per day and per nurse: answered, unanswered, cancelled by the client, shares within 60 s and
    180 s of all alarms to answer, median and p90 (seconds) of the answered ones; and per day how many
    closed alarms had each outcome (``outcomes``, JSON only)."""
    since_ms, until_ms, zone = span
    _audit(session, ctx, user, "answer-times", format, span)
    timings = [
        calc.AlertTiming(opened, acked, nurse, resolved, outcome, resolved_by is not None)
        for opened, acked, nurse, resolved, outcome, resolved_by in session.execute(
            select(
                Alert.opened_ms,
                Alert.acknowledged_ms,
                User.display_name,
                Alert.resolved_ms,
                Alert.outcome,
                Alert.resolved_by,
            )
            .outerjoin(User, User.id == Alert.acknowledged_by)
            .where(Alert.kind == "alarm", Alert.opened_ms >= since_ms, Alert.opened_ms < until_ms)
        )
    ]
    now_ms = ctx.clock_ms()
    rows = [asdict(r) for r in calc.answer_times(timings, since_ms, until_ms, now_ms, zone)]
    if format == "csv":
        return _csv(
            "answer-times",
            since_ms,
            until_ms,
            [
                "day",
                "nurse",
                "answered",
                "unanswered",
                "cancelled_by_client",
                "within_60_pct",
                "within_180_pct",
                "median_s",
                "p90_s",
            ],
            (
                [
                    r["day"],
                    r["nurse"] if r["nurse"] is not None else "(all nurses)",
                    r["answered"],
                    r["unanswered"],
                    r["cancelled_by_client"],
                    _pct(r["within_60"]),
                    _pct(r["within_180"]),
                    _num(r["median_s"]),
                    _num(r["p90_s"]),
                ]
                for r in rows
            ),
        )
    return {
        **_span(since_ms, until_ms, zone),
        "targets": {"within_60": calc.TARGET_WITHIN_60, "within_180": calc.TARGET_WITHIN_180},
        "definitions": calc.DEFINITIONS["answer_times"],
        "days": [r for r in rows if r["nurse"] is None],
        "nurses": [r for r in rows if r["nurse"] is not None],
        "outcomes": [asdict(r) for r in outcome_counts(timings, since_ms, until_ms, zone)],
    }


# -- adherence ----------------------------------------------------------------------------------------


@router.get("/api/reports/adherence", response_model=AdherenceReport, responses=CSV)
def adherence(
    ctx: Ctx,
    session: AuditedSession,
    user: ReportUser,
    span: Window,
    client_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    format: Format = "json",
) -> Any:
    """Per client: doses due, taken, taken late, missed, still pending, and adherence.

    The doses are the schedule's instances and the doses only the dispenser reported (``dose`` events the
    schedule has no instance of, and missed-dose alerts opened on the dispenser's word).
    """
    since_ms, until_ms, zone = span
    if client_id is not None and session.get(Client, client_id) is None:
        raise NotFound(f"no client {client_id}")
    _audit(session, ctx, user, "adherence", format, span, client_id)
    # Reports are matched to instances up to the match window away, so read that much around the window.
    near = (since_ms - calc.MATCH_WINDOW_MS, until_ms + calc.MATCH_WINDOW_MS)
    instances = _dose_instances(session, near, client_id)
    doses = [calc.DoseRecord(c, due, state) for c, _dose, due, state in instances]
    doses += calc.dispenser_doses(
        _dispenser_reports(session, near, client_id),
        _dispenser_miss_alerts(session, near, client_id),
        [calc.DueInstance(c, dose, due) for c, dose, due, _state in instances],
    )
    names = _client_names(session, {d.client_id for d in doses})
    rows = [
        {"client_name": names.get(r.client_id, ""), **asdict(r)}
        for r in calc.adherence(doses, since_ms, until_ms)
    ]
    if format == "csv":
        columns = [
            "client_id",
            "client_name",
            "due",
            "taken",
            "taken_late",
            "missed",
            "pending",
            "unscheduled",
        ]
        return _csv(
            "adherence",
            since_ms,
            until_ms,
            [*columns, "adherence_pct", "on_time_pct"],
            ([*(r[c] for c in columns), _pct(r["adherence"]), _pct(r["on_time"])] for r in rows),
        )
    return {**_span(since_ms, until_ms, zone), "definitions": calc.DEFINITIONS["adherence"], "clients": rows}


def _dose_instances(
    session: Session, window: tuple[int, int], client_id: int | None
) -> list[tuple[int, str, int, str]]:
    """(client, dose id, due, state) of the schedule's instances due in ``window``, cancelled ones too."""
    query = select(
        DoseInstance.client_id, DoseInstance.dose_id, DoseInstance.due_ms, DoseInstance.state
    ).where(DoseInstance.due_ms >= window[0], DoseInstance.due_ms < window[1])
    if client_id is not None:
        query = query.where(DoseInstance.client_id == client_id)
    return [(int(c), str(d), int(due), str(state)) for c, d, due, state in session.execute(query)]


def _dispenser_reports(
    session: Session, window: tuple[int, int], client_id: int | None
) -> list[calc.DispenserReport]:
    """The ``dose`` events received in ``window``, for the client their device belongs to."""
    query = (
        select(Device.client_id, DeviceEvent.received_ms, DeviceEvent.payload)
        .join(Device, Device.id == DeviceEvent.device_id)
        .where(
            DeviceEvent.kind == "dose",
            DeviceEvent.received_ms >= window[0],
            DeviceEvent.received_ms < window[1],
        )
    )
    if client_id is not None:
        query = query.where(Device.client_id == client_id)
    reports = []
    for client, received_ms, payload in session.execute(query):
        body = json.loads(payload)  # stored by the gateway after validation: dose_id and event are there
        due = body.get("due_ts")
        reports.append(
            calc.DispenserReport(
                int(client),
                str(body["dose_id"]),
                str(body["event"]),
                int(received_ms),
                due if isinstance(due, int) else None,
            )
        )
    return reports


def _dispenser_miss_alerts(
    session: Session, window: tuple[int, int], client_id: int | None
) -> list[calc.DispenserMissAlert]:
    """Missed-dose alerts the monitor opened on a dispenser's word, opened in ``window``."""
    query = select(Alert.client_id, Alert.subject, Alert.opened_ms, Alert.outcome).where(
        Alert.kind == "missed_dose",
        Alert.subject.startswith(_DEVICE_DOSE, autoescape=True),
        Alert.opened_ms >= window[0],
        Alert.opened_ms < window[1],
    )
    if client_id is not None:
        query = query.where(Alert.client_id == client_id)
    return [
        calc.DispenserMissAlert(
            int(c), str(subject).removeprefix(_DEVICE_DOSE), int(opened), outcome == "dose_taken_late"
        )
        for c, subject, opened, outcome in session.execute(query)
    ]


def _client_names(session: Session, ids: Iterable[int]) -> dict[int, str]:
    wanted = list(ids)
    if not wanted:
        return {}
    rows = session.execute(select(Client.id, Client.name).where(Client.id.in_(wanted)))
    return {int(cid): str(name) for cid, name in rows.all()}


# -- uptime -------------------------------------------------------------------------------------------


@router.get("/api/reports/uptime", response_model=UptimeReport, responses=CSV)
def uptime(ctx: Ctx, session: AuditedSession, user: ReportUser, span: Window, format: Format = "json") -> Any:
    """Per device: the share of the window it was online (from its status reports and current state), and
    the time the service itself was down (the gaps between the gateway's runs), which is not the device's."""
    since_ms, until_ms, zone = span
    _audit(session, ctx, user, "uptime", format, span)
    now_ms = ctx.clock_ms()
    devices = session.execute(
        select(Device, Client.name)
        .join(Client, Client.id == Device.client_id)
        .where(Client.system.is_(False))  # not the service's own probe device
        .order_by(Device.id)
    ).all()
    transitions = _status_transitions(session, since_ms, until_ms)
    down = calc.service_down_periods(_gateway_runs(session, since_ms, until_ms), _SERVICE_GRACE_MS, now_ms)
    histories = [
        calc.DeviceHistory(
            device.id,
            device.created_ms,
            tuple(transitions.get(device.id, ())),
            device.online,
            device.online_changed_ms,
        )
        for device, _name in devices
    ]
    calculated = {
        r.device_id: r for r in calc.uptime(histories, since_ms, until_ms, now_ms, service_down=down)
    }
    rows = [
        {
            "device_id": device.id,
            "label": device.label,
            "kind": device.kind,
            "client_name": name,
            "online_now": device.online,
            **{k: v for k, v in asdict(calculated[device.id]).items() if k != "device_id"},
        }
        for device, name in devices
    ]
    if format == "csv":
        columns = [
            "device_id",
            "label",
            "kind",
            "client_name",
            "online_ms",
            "offline_ms",
            "unknown_ms",
            "service_down_ms",
        ]
        return _csv(
            "uptime",
            since_ms,
            until_ms,
            [*columns, "online_pct", "changes"],
            ([*(r[c] for c in columns), _pct(r["share_online"]), r["changes"]] for r in rows),
        )
    return {**_span(since_ms, until_ms, zone), "definitions": calc.DEFINITIONS["uptime"], "devices": rows}


def _gateway_runs(session: Session, since_ms: int, until_ms: int) -> list[calc.RunSpan]:
    """The gateway's runs that reach into the window, and the last one that ended before it (the gap from
    its end may reach into the window)."""
    gateway = ServiceRun.component == "gateway"
    spans = list(
        session.execute(
            select(ServiceRun.started_ms, ServiceRun.last_beat_ms).where(
                gateway, ServiceRun.last_beat_ms >= since_ms, ServiceRun.started_ms < until_ms
            )
        )
    )
    spans += session.execute(
        select(ServiceRun.started_ms, ServiceRun.last_beat_ms)
        .where(gateway, ServiceRun.last_beat_ms < since_ms)
        .order_by(ServiceRun.last_beat_ms.desc())
        .limit(1)
    )
    return [calc.RunSpan(int(started), int(last)) for started, last in spans]


def _status_transitions(session: Session, since_ms: int, until_ms: int) -> dict[str, list[tuple[int, bool]]]:
    """Each device's status reports in the window, plus the last one before it (the starting state)."""
    last_before = (
        select(DeviceEvent.device_id, func.max(DeviceEvent.received_ms).label("at"))
        .where(DeviceEvent.kind == "status", DeviceEvent.received_ms < since_ms)
        .group_by(DeviceEvent.device_id)
        .subquery()
    )
    rows = list(
        session.execute(
            select(DeviceEvent.device_id, DeviceEvent.received_ms, DeviceEvent.payload).where(
                DeviceEvent.kind == "status",
                DeviceEvent.received_ms >= since_ms,
                DeviceEvent.received_ms < until_ms,
            )
        )
    )
    rows += session.execute(
        select(DeviceEvent.device_id, DeviceEvent.received_ms, DeviceEvent.payload)
        .join(
            last_before,
            (last_before.c.device_id == DeviceEvent.device_id)
            & (last_before.c.at == DeviceEvent.received_ms),
        )
        .where(DeviceEvent.kind == "status")
    )
    out: dict[str, list[tuple[int, bool]]] = {}
    for device_id, at_ms, payload in rows:
        online = json.loads(payload).get("online")
        if isinstance(online, bool):
            out.setdefault(device_id, []).append((at_ms, online))
    return out


# -- output -------------------------------------------------------------------------------------------


def _span(since_ms: int, until_ms: int, zone: tzinfo) -> dict[str, Any]:
    return {"since_ms": since_ms, "until_ms": until_ms, "tz": str(zone)}


def _pct(share: float | None) -> str:
    return "" if share is None else f"{share * 100:.1f}"


def _num(value: float | None) -> str:
    return "" if value is None else f"{value:.1f}"


def _cell(value: object) -> object:
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return "" if value is None else value


def _csv(
    name: str, since_ms: int, until_ms: int, header: Sequence[str], rows: Iterable[Sequence[object]]
) -> Response:
    """A CSV download: a header row, RFC 4180 quoting, formula-looking text neutralised."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(header)
    writer.writerows([_cell(v) for v in row] for row in rows)
    start = datetime.fromtimestamp(since_ms / 1000, UTC).date().isoformat()
    end = datetime.fromtimestamp((until_ms - 1) / 1000, UTC).date().isoformat()
    return Response(
        content=buffer.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="carealarm-{name}-{start}-{end}.csv"'},
    )
