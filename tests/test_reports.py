"""The reports API on a real database (SQLite and PostgreSQL): JSON, CSV downloads and who may see them."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from central.app import CentralContext, create_app
from central.auth import hash_password
from central.feed import Broadcaster
from storage.db import SessionFactory
from storage.models import Alert, Client, DeviceEvent, DoseInstance, ServiceRun, User
from storage.registry import add_client, add_device, add_user

DAY = 86_400_000
T0 = 1_800_000_000_000 - (1_800_000_000_000 % DAY)  # 2027-01-15 00:00 UTC
NOW = T0 + 2 * DAY
S = 1000
WINDOW = {"since": str(T0), "until": str(T0 + 2 * DAY)}


def seed(sessions: SessionFactory) -> None:
    """Two days of alarms, doses and status reports for two clients."""
    with sessions.begin() as s:
        users = {}
        for username, role in (("sup", "supervisor"), ("adm", "admin"), ("nurse", "care_nurse")):
            users[username] = add_user(
                s,
                username=username,
                display_name=f"{username.title()} Name",
                role=role,
                password_hash=hash_password(f"{username}-pw"),
                now_ms=T0 - DAY,
            ).id
        jansen = add_client(s, name='Jansen, "Mien"', now_ms=T0 - DAY)
        evil = add_client(s, name="=HYPERLINK(1)", now_ms=T0 - DAY)
        add_device(s, device_id="btn-1", client_id=jansen.id, kind="alarm_button", now_ms=T0 - DAY)
        add_device(s, device_id="disp-1", client_id=evil.id, kind="dispenser", now_ms=T0 - DAY)
        for i, (opened, wait_s, nurse) in enumerate(
            [(T0 + 3_600_000, 30, "nurse"), (T0 + 7_200_000, 120, "sup"), (T0 + DAY + 60_000, 10, "nurse")]
        ):
            s.add(
                Alert(
                    client_id=jansen.id,
                    device_id="btn-1",
                    kind="alarm",
                    priority=1,
                    state="resolved",
                    opened_ms=opened,
                    last_event_ms=opened,
                    acknowledged_ms=opened + wait_s * S,
                    acknowledged_by=users[nurse],
                    resolved_ms=opened + 600 * S,
                    outcome="talked_to_client",
                    subject=str(i),
                )
            )
        for i, state in enumerate(["taken", "taken", "taken_late", "missed"]):
            s.add(DoseInstance(client_id=evil.id, dose_id="morning", due_ms=T0 + i * 3_600_000, state=state))
        for at, online in ((T0 - 10, True), (T0 + DAY, False), (T0 + DAY + DAY // 2, True)):
            s.add(
                DeviceEvent(
                    device_id="btn-1",
                    msg_id=f"~status-{at}",
                    kind="status",
                    device_ts_ms=at,
                    received_ms=at,
                    payload=json.dumps({"online": online}),
                    handled_ms=at,
                )
            )


@pytest.fixture
def api(sessions: SessionFactory) -> Iterator[TestClient]:
    seed(sessions)
    broadcaster = Broadcaster(sessions, poll_interval_s=0.1)
    ctx = CentralContext(
        sessions=sessions, broadcaster=broadcaster, notify_alerts=broadcaster.wake, clock_ms=lambda: NOW
    )
    with TestClient(create_app(ctx)) as client:
        yield client


def sign_in(api: TestClient, username: str) -> None:
    response = api.post("/api/session", json={"username": username, "password": f"{username}-pw"})
    assert response.status_code == 200, response.text


def read_csv(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_answer_times_per_day_with_targets(api: TestClient) -> None:
    """A supervisor gets per-day shares within 60/180 s and per-nurse rows with median and p90."""
    sign_in(api, "sup")
    body = api.get("/api/reports/answer-times", params=WINDOW).json()
    assert body["targets"] == {"within_60": 0.975, "within_180": 0.99}
    assert [(d["day"], d["answered"], d["within_60"], d["within_180"]) for d in body["days"]] == [
        ("2027-01-15", 2, 0.5, 1.0),
        ("2027-01-16", 1, 1.0, 1.0),
    ]
    assert [(r["day"], r["nurse"], r["median_s"]) for r in body["nurses"]] == [
        ("2027-01-15", "Nurse Name", 30.0),
        ("2027-01-15", "Sup Name", 120.0),
        ("2027-01-16", "Nurse Name", 10.0),
    ]


def test_answer_times_as_csv_download(api: TestClient) -> None:
    """?format=csv is an attachment with a header row and percentages."""
    sign_in(api, "adm")
    response = api.get("/api/reports/answer-times", params={**WINDOW, "format": "csv"})
    assert response.headers["content-type"].startswith("text/csv")
    assert response.headers["content-disposition"] == (
        'attachment; filename="carealarm-answer-times-2027-01-15-2027-01-16.csv"'
    )
    rows = read_csv(response.text)
    assert (rows[0]["nurse"], rows[0]["within_60_pct"], rows[0]["p90_s"]) == ("(all nurses)", "50.0", "120.0")


def test_adherence_per_client(api: TestClient) -> None:
    """Doses due, taken, late and missed per client, with adherence over the decided doses."""
    sign_in(api, "sup")
    [row] = api.get("/api/reports/adherence", params=WINDOW).json()["clients"]
    assert (row["client_name"], row["due"], row["taken"], row["taken_late"], row["missed"]) == (
        "=HYPERLINK(1)",
        4,
        2,
        1,
        1,
    )
    assert row["adherence"] == 0.75


def test_adherence_filters_one_client(api: TestClient) -> None:
    """client_id narrows the report to one client; an unknown client is 404."""
    sign_in(api, "sup")
    clients = api.get("/api/manage/clients").json()
    jansen = next(c["id"] for c in clients if c["name"].startswith("Jansen"))
    assert api.get("/api/reports/adherence", params={**WINDOW, "client_id": jansen}).json()["clients"] == []
    assert api.get("/api/reports/adherence", params={**WINDOW, "client_id": 99999}).status_code == 404


def test_csv_quotes_and_neutralises_formulas(api: TestClient) -> None:
    """A name with a comma and quotes survives the CSV; one that looks like a formula is made text."""
    sign_in(api, "sup")
    text = api.get("/api/reports/adherence", params={**WINDOW, "format": "csv"}).text
    [row] = read_csv(text)
    assert row["client_name"] == "'=HYPERLINK(1)"
    assert row["adherence_pct"] == "75.0"


def test_uptime_per_device(api: TestClient) -> None:
    """Online from a report before the window, offline half a day: 75% online over two days."""
    sign_in(api, "sup")
    devices = {d["device_id"]: d for d in api.get("/api/reports/uptime", params=WINDOW).json()["devices"]}
    button = devices["btn-1"]
    assert (button["share_online"], button["offline_ms"], button["changes"]) == (0.75, DAY // 2, 2)
    assert devices["disp-1"]["share_online"] is None  # never reported: unknown, not offline
    assert devices["disp-1"]["unknown_ms"] == 2 * DAY


def test_uptime_csv_has_a_row_per_device(api: TestClient) -> None:
    """The uptime CSV lists each device with its online percentage."""
    sign_in(api, "sup")
    rows = read_csv(api.get("/api/reports/uptime", params={**WINDOW, "format": "csv"}).text)
    assert [(r["device_id"], r["online_pct"]) for r in rows] == [("btn-1", "75.0"), ("disp-1", "")]


def test_dates_are_whole_days_in_the_time_zone(api: TestClient) -> None:
    """since/until as dates cover whole days; until's day is included."""
    sign_in(api, "sup")
    body = api.get(
        "/api/reports/answer-times", params={"since": "2027-01-16", "until": "2027-01-16", "tz": "UTC"}
    ).json()
    assert (body["since_ms"], body["until_ms"]) == (T0 + DAY, T0 + 2 * DAY)
    assert [d["day"] for d in body["days"]] == ["2027-01-16"]


def test_a_care_nurse_may_not_see_reports(api: TestClient) -> None:
    """Reports are for supervisors and admins: a care nurse gets 403 with the reason, anonymous 401."""
    assert api.get("/api/reports/uptime").status_code == 401
    sign_in(api, "nurse")
    for path in ("answer-times", "adherence", "uptime"):
        response = api.get(f"/api/reports/{path}")
        assert response.status_code == 403
        assert "supervisors and admins" in response.json()["detail"]


def test_bad_windows_are_refused_clearly(api: TestClient) -> None:
    """A reversed window, a bad date and an unknown time zone are 422 with a reason."""
    sign_in(api, "sup")
    cases = [
        ({"since": "2027-01-10", "until": "2027-01-01"}, "since must be before until"),
        ({"since": "yesterday"}, "since must be YYYY-MM-DD"),
        ({"tz": "Mars/Olympus"}, "unknown time zone"),
        ({"since": "2020-01-01", "until": "2027-01-01"}, "at most 366 days"),
    ]
    for params, message in cases:
        response = api.get("/api/reports/answer-times", params=params)
        assert response.status_code == 422 and message in response.json()["detail"], response.text


# -- the reports tell the truth -----------------------------------------------------------------------


def _user_id(sessions: SessionFactory, username: str) -> int:
    with sessions() as s:
        return int(s.scalars(select(User.id).where(User.username == username)).one())


def _client_id(sessions: SessionFactory, prefix: str) -> int:
    with sessions() as s:
        return int(s.scalars(select(Client.id).where(Client.name.startswith(prefix))).one())


def _alarm(client_id: int, opened: int, **fields: object) -> Alert:
    values: dict[str, object] = {"state": "open", "priority": 1, "last_event_ms": opened, **fields}
    return Alert(client_id=client_id, device_id="btn-1", kind="alarm", opened_ms=opened, **values)


def test_unanswered_alarms_are_misses_and_client_cancels_are_apart(
    api: TestClient, sessions: SessionFactory
) -> None:
    """Day two gets an alarm still open, one resolved without acknowledgement and one the client cancelled
    on the device: the first two are misses in both shares, the cancel has its own count."""
    jansen = _client_id(sessions, "Jansen")
    nurse = _user_id(sessions, "nurse")
    day2 = T0 + DAY
    with sessions.begin() as s:
        s.add(_alarm(jansen, day2 + 3_600_000))
        s.add(
            _alarm(
                jansen,
                day2 + 7_200_000,
                state="resolved",
                resolved_ms=day2 + 7_200_000 + 400 * S,
                resolved_by=nurse,
                outcome="other",
            )
        )
        s.add(
            _alarm(
                jansen,
                day2 + 10_800_000,
                state="resolved",
                resolved_ms=day2 + 10_800_000 + 12 * S,
                outcome="cancelled_by_client",
            )
        )
    sign_in(api, "sup")
    body = api.get("/api/reports/answer-times", params=WINDOW).json()
    [_, day] = body["days"]
    assert (day["answered"], day["unanswered"], day["cancelled_by_client"]) == (1, 2, 1)
    assert (day["within_60"], day["within_180"]) == (pytest.approx(1 / 3), pytest.approx(1 / 3))
    assert body["definitions"]["within_60"].startswith("Alarms acknowledged within 60 s")
    rows = read_csv(api.get("/api/reports/answer-times", params={**WINDOW, "format": "csv"}).text)
    assert [(r["day"], r["unanswered"], r["cancelled_by_client"], r["within_180_pct"]) for r in rows][-2] == (
        "2027-01-16",
        "2",
        "1",
        "33.3",
    )


def _dose_event(
    device_id: str, msg_id: str, at: int, event: str, dose_id: str, due: int | None = None
) -> DeviceEvent:
    body: dict[str, object] = {"msg_id": msg_id, "ts": at, "event": event, "dose_id": dose_id}
    if due is not None:
        body["due_ts"] = due
    return DeviceEvent(
        device_id=device_id,
        msg_id=msg_id,
        kind="dose",
        device_ts_ms=at,
        received_ms=at,
        payload=json.dumps(body),
        handled_ms=at,
    )


def test_adherence_uses_the_dispensers_reports_and_leaves_out_cancelled_doses(
    api: TestClient, sessions: SessionFactory
) -> None:
    """A client with no schedule but a dispenser that reported a miss, a late dose and a taken dose gets a
    row; a missed-dose alert whose report is gone counts; a report about a scheduled dose and a dose
    removed from the schedule change nothing for the other client."""
    jansen = _client_id(sessions, "Jansen")
    evil = _client_id(sessions, "=HYPERLINK")
    hour = 3_600_000
    with sessions.begin() as s:
        add_device(s, device_id="disp-2", client_id=jansen, kind="dispenser", now_ms=T0 - DAY)
        s.add_all(
            [
                _dose_event("disp-2", "m1", T0 + 9 * hour, "missed", "morning"),
                _dose_event("disp-2", "t1", T0 + 10 * hour, "taken", "morning"),
                _dose_event("disp-2", "m2", T0 + 13 * hour, "missed", "noon", due=T0 + 12 * hour),
                _dose_event("disp-2", "t2", T0 + 18 * hour, "taken", "evening", due=T0 + 18 * hour),
                # The scheduled "morning" dose of the other client, as its dispenser saw it: no extra dose.
                _dose_event("disp-1", "x1", T0 + 5 * hour, "missed", "morning", due=T0 + 3 * hour),
            ]
        )
        s.add(
            Alert(
                client_id=jansen,
                device_id="disp-2",
                kind="missed_dose",
                priority=3,
                state="open",
                opened_ms=T0 + DAY + 21 * hour,
                last_event_ms=T0 + DAY + 21 * hour,
                subject="device-dose:night",
            )
        )
        s.add(DoseInstance(client_id=evil, dose_id="noon", due_ms=T0 + 12 * hour, state="cancelled"))
    sign_in(api, "sup")
    rows = {r["client_name"]: r for r in api.get("/api/reports/adherence", params=WINDOW).json()["clients"]}
    mien = rows['Jansen, "Mien"']
    assert (mien["due"], mien["taken"], mien["taken_late"], mien["missed"], mien["unscheduled"]) == (
        4,
        1,
        1,
        2,
        4,
    )
    assert mien["adherence"] == 0.5
    other = rows["=HYPERLINK(1)"]
    assert (other["due"], other["missed"], other["unscheduled"], other["adherence"]) == (4, 1, 0, 0.75)
    [csv_row] = [
        r
        for r in read_csv(api.get("/api/reports/adherence", params={**WINDOW, "format": "csv"}).text)
        if r["client_name"].startswith("Jansen")
    ]
    assert (csv_row["unscheduled"], csv_row["adherence_pct"]) == ("4", "50.0")


def test_uptime_leaves_out_the_time_the_service_was_down(api: TestClient, sessions: SessionFactory) -> None:
    """Two gateway runs with two hours between them: those hours are the service's, in their own column,
    and not the device's offline or unreported time."""
    hour = 3_600_000
    with sessions.begin() as s:
        s.add(
            ServiceRun(component="gateway", instance="gw1", started_ms=T0 - DAY, last_beat_ms=T0 + 6 * hour)
        )
        s.add(
            ServiceRun(
                component="gateway", instance="gw1", started_ms=T0 + 8 * hour, last_beat_ms=NOW - 5 * S
            )
        )
        # Another component's gap is not the gateway's.
        s.add(ServiceRun(component="monitor", instance="m1", started_ms=T0 + 20 * hour, last_beat_ms=NOW))
    sign_in(api, "sup")
    devices = {d["device_id"]: d for d in api.get("/api/reports/uptime", params=WINDOW).json()["devices"]}
    button = devices["btn-1"]
    assert (button["service_down_ms"], button["offline_ms"]) == (2 * hour, DAY // 2)
    assert button["online_ms"] == DAY + DAY // 2 - 2 * hour
    assert devices["disp-1"]["unknown_ms"] == 2 * DAY - 2 * hour
    rows = read_csv(api.get("/api/reports/uptime", params={**WINDOW, "format": "csv"}).text)
    assert [(r["device_id"], r["service_down_ms"]) for r in rows] == [
        ("btn-1", str(2 * hour)),
        ("disp-1", str(2 * hour)),
    ]
