"""The care-station API on a real database: sign-in, roles, acknowledge/resolve and the live WebSocket."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from central.app import CentralContext, create_app
from central.auth import hash_password
from central.feed import Broadcaster
from gateway.ingest import Inbound, plan_batch
from gateway.store import store_plan
from monitor.events import handle_pending_events
from storage.db import SessionFactory
from storage.registry import add_client, add_device, add_user

NOW = 1_800_000_000_000


@pytest.fixture
def api(sessions: SessionFactory) -> Iterator[TestClient]:
    with sessions.begin() as s:
        client = add_client(s, name="Mevr. Jansen", address="Dorpsstraat 1", now_ms=NOW)
        add_device(
            s, device_id="btn-1", client_id=client.id, kind="alarm_button", label="Pendant", now_ms=NOW
        )
        for username, role in (("nurse", "care_nurse"), ("nurse2", "care_nurse"), ("wijk", "district_nurse")):
            add_user(
                s,
                username=username,
                display_name=username.title(),
                role=role,
                password_hash=hash_password(f"{username}-pw"),
                now_ms=NOW,
            )
    broadcaster = Broadcaster(sessions, poll_interval_s=0.1)
    ctx = CentralContext(sessions=sessions, broadcaster=broadcaster, notify_alerts=broadcaster.wake)
    with TestClient(create_app(ctx)) as client:
        yield client


def _sign_in(api: TestClient, username: str) -> None:
    response = api.post("/api/session", json={"username": username, "password": f"{username}-pw"})
    assert response.status_code == 200, response.text


def _raise_alarm(sessions: SessionFactory, msg_id: str = "a1") -> int:
    inbound = Inbound(
        "carealarm/v1/devices/btn-1/alarm", f'{{"msg_id":"{msg_id}","ts":{NOW}}}'.encode(), 1, 1, NOW
    )
    with sessions.begin() as s:
        store_plan(s, plan_batch([inbound], lambda _d: True, NOW), [])
    with sessions.begin() as s:
        handle_pending_events(s, NOW)
    from sqlalchemy import select

    from storage.models import Alert

    with sessions() as s:
        return int(s.scalars(select(Alert.id).order_by(Alert.id.desc())).first() or 0)


def test_wrong_password_is_refused_and_repeated_failures_are_limited(api: TestClient) -> None:
    """A wrong password gets 401 with a clear message; the sixth try within minutes gets 429."""
    for _ in range(5):
        response = api.post("/api/session", json={"username": "nurse", "password": "guess"})
        assert response.status_code == 401
        assert response.json()["detail"] == "unknown user name or wrong password"
    assert api.post("/api/session", json={"username": "nurse", "password": "nurse-pw"}).status_code == 429


def test_session_cookie_is_httponly_and_strict(api: TestClient) -> None:
    """The session cookie cannot be read by scripts nor sent by other sites."""
    response = api.post("/api/session", json={"username": "nurse", "password": "nurse-pw"})
    cookie = response.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie


def test_alerts_need_a_signed_in_console_role(api: TestClient) -> None:
    """Anonymous requests get 401; a district nurse may not work the care-station queue (403)."""
    assert api.get("/api/alerts").status_code == 401
    _sign_in(api, "wijk")
    response = api.get("/api/alerts")
    assert response.status_code == 403
    assert "district_nurse" in response.json()["detail"]


def test_acknowledge_and_resolve(api: TestClient, sessions: SessionFactory) -> None:
    """A nurse takes an alarm (it shows who), then resolves it with an outcome; it leaves the active list."""
    alert_id = _raise_alarm(sessions)
    _sign_in(api, "nurse")
    [alert] = api.get("/api/alerts").json()
    assert (alert["state"], alert["client"]["name"], alert["device"]["id"]) == (
        "open",
        "Mevr. Jansen",
        "btn-1",
    )
    taken = api.post(f"/api/alerts/{alert_id}/acknowledge").json()
    assert (taken["state"], taken["acknowledged_by"]) == ("acknowledged", "Nurse")
    done = api.post(
        f"/api/alerts/{alert_id}/resolve", json={"outcome": "reassured", "note": "Talked to her; all well."}
    ).json()
    assert (done["state"], done["outcome"]) == ("resolved", "reassured")
    assert api.get("/api/alerts").json() == []


def test_bad_requests_get_clear_errors(api: TestClient, sessions: SessionFactory) -> None:
    """A second acknowledge is 409, an unknown alert 404, a bad outcome 422 — each with a reason."""
    alert_id = _raise_alarm(sessions)
    _sign_in(api, "nurse")
    assert api.post(f"/api/alerts/{alert_id}/acknowledge").status_code == 200
    again = api.post(f"/api/alerts/{alert_id}/acknowledge")
    assert again.status_code == 409 and "acknowledged" in again.json()["detail"]
    assert api.post("/api/alerts/999999/acknowledge").status_code == 404
    bad = api.post(f"/api/alerts/{alert_id}/resolve", json={"outcome": "shrug", "note": "?"})
    assert bad.status_code == 422 and "outcome must be one of" in bad.json()["detail"]
    assert api.post(f"/api/alerts/{alert_id}/resolve", json={}).status_code == 422


def test_live_feed_sends_snapshot_then_changes(api: TestClient, sessions: SessionFactory) -> None:
    """The WebSocket starts with the active alerts, then pushes a change made by another nurse."""
    first = _raise_alarm(sessions, "a1")
    _sign_in(api, "nurse")
    with api.websocket_connect("/api/live") as ws:
        snapshot = ws.receive_json()
        assert snapshot["type"] == "snapshot"
        assert [a["id"] for a in snapshot["alerts"]] == [first]
        other = TestClient(api.app)
        _sign_in(other, "nurse2")
        assert other.post(f"/api/alerts/{first}/acknowledge").status_code == 200
        # The feed may first repeat the "opened" change the snapshot already holds (same version: the
        # console keeps one copy); then the acknowledgement arrives.
        change = ws.receive_json()
        while change["alert"]["state"] == "open":
            assert change["alert"]["version"] == snapshot["alerts"][0]["version"]
            change = ws.receive_json()
        assert change["type"] == "alert"
        assert (change["alert"]["id"], change["alert"]["state"], change["alert"]["acknowledged_by"]) == (
            first,
            "acknowledged",
            "Nurse2",
        )


def test_live_feed_refuses_anonymous(api: TestClient) -> None:
    """Without a session the WebSocket is closed with code 4401."""
    with pytest.raises(WebSocketDisconnect) as info, api.websocket_connect("/api/live") as ws:
        ws.receive_json()
    assert info.value.code == 4401


def test_openapi_documents_the_api(api: TestClient) -> None:
    """The REST API is described at /openapi.json."""
    paths = api.get("/openapi.json").json()["paths"]
    for path in (
        "/api/session",
        "/api/alerts",
        "/api/alerts/{alert_id}/acknowledge",
        "/api/alerts/{alert_id}/resolve",
    ):
        assert path in paths
