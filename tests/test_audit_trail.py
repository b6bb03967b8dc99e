"""Every look at a client is on the record: each route that returns or changes client data writes an audit
row (who, when, what, which client), the live feeds once per subscription with what they showed, monitoring
sessions at start and end; supervisors read the log as CSV. SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import io
import re
from typing import Any

import pytest
from access_world import NOW, World, world  # noqa: F401
from test_access_matrix import _actions, _api_routes, _fill  # noqa: F401

from central.access import PUBLIC_ROUTES
from central.deps import Require

# Routes that show no client's data and change none (besides the public ones).
NO_CLIENT_DATA = {("GET", "/api/calls/config")}
OWN, OTHER = "own", "other"

# (method, path) -> (who, site, request kwargs, the audit action expected, whether it names the client).
# In this order: the alerts are taken, noted and resolved before the management changes.
EXERCISED: dict[tuple[str, str], tuple[str, str, dict[str, Any], str, bool]] = {
    ("GET", "/api/alerts"): ("care", OWN, {}, "alert.list", False),
    ("POST", "/api/alerts/{alert_id}/acknowledge"): ("care", OWN, {}, "alert.acknowledge", True),
    ("POST", "/api/alerts/{alert_id}/notes"): (
        "care",
        OWN,
        {"json": {"text": "on my way"}},
        "alert.note",
        True,
    ),
    ("POST", "/api/alerts/{alert_id}/assign"): (
        "care",
        OWN,
        {"json": {"user_id": None}},
        "alert.assign",
        True,
    ),
    ("POST", "/api/alerts/{alert_id}/visits"): (
        "care",
        OWN,
        {"json": {"visitor": "Anna"}},
        "visit.send",
        True,
    ),
    ("POST", "/api/visits/{visit_id}/arrived"): ("wijk", OWN, {}, "visit.arrived", True),
    ("POST", "/api/alerts/{alert_id}/resolve"): (
        "care",
        OTHER,
        {"json": {"outcome": "false_alarm", "note": "pressed by accident"}},
        "alert.resolve",
        True,
    ),
    ("POST", "/api/alerts/{alert_id}/undo"): ("care", OTHER, {}, "alert.undo", True),
    ("GET", "/api/handover"): ("care", OWN, {}, "alert.handover", False),
    ("POST", "/api/calls"): ("care", OWN, {"json": {"client_id": 0, "kind": "video"}}, "call.start", True),
    ("GET", "/api/calls/active"): ("care", OWN, {}, "call.list", False),
    ("GET", "/api/clients/{client_id}/video"): ("care", OWN, {}, "client.video", True),
    ("GET", "/api/clients/{client_id}/calls"): ("wijk", OWN, {}, "client.calls", True),
    ("GET", "/api/clients/{client_id}/video-consent"): ("wijk", OWN, {}, "consent.read", True),
    ("PUT", "/api/clients/{client_id}/video-consent"): (
        "wijk",
        OWN,
        {"json": {"monitoring_allowed": True, "auto_answer": False}},
        "consent.record",
        True,
    ),
    ("GET", "/api/clients"): ("wijk", OWN, {}, "client.list", False),
    ("POST", "/api/clients/search"): ("wijk", OWN, {"json": {"q": "jan"}}, "client.search", False),
    ("GET", "/api/clients/{client_id}"): (
        "wijk",
        OWN,
        {"params": {"reason": "weekly round"}},
        "client.read",
        True,
    ),
    ("GET", "/api/clients/{client_id}/timeline"): (
        "wijk",
        OWN,
        {"params": {"reason": "weekly round"}},
        "client.timeline",
        True,
    ),
    ("POST", "/api/clients/{client_id}/notes"): (
        "wijk",
        OWN,
        {"params": {"reason": "weekly round"}, "json": {"text": "all well"}},
        "client.note",
        True,
    ),
    ("PUT", "/api/clients/{client_id}"): (
        "wijk",
        OWN,
        {"params": {"reason": "weekly round"}, "json": {"phone": "038 1", "key_safe_code": "1234"}},
        "client.edit",
        True,
    ),
    ("POST", "/api/clients/{client_id}/key-safe/reveal"): (
        "wijk",
        OWN,
        {"params": {"reason": "letting the GP in"}},
        "client.key_safe.reveal",
        True,
    ),
    ("GET", "/api/clients/{client_id}/contacts"): (
        "wijk",
        OWN,
        {"params": {"reason": "weekly round"}},
        "client.contacts.read",
        True,
    ),
    ("POST", "/api/clients/{client_id}/contacts"): (
        "wijk",
        OWN,
        {"params": {"reason": "weekly round"}, "json": {"name": "Els", "keyholder": True}},
        "client.contact.add",
        True,
    ),
    ("PUT", "/api/clients/{client_id}/contacts"): (
        "wijk",
        OWN,
        {"params": {"reason": "weekly round"}, "json": {"items": []}},
        "client.contacts.change",
        True,
    ),
    ("GET", "/api/audit"): ("sup", OWN, {"params": {"client_id": 0}}, "audit.read", True),
    ("GET", "/api/reports/answer-times"): ("sup", OWN, {}, "report.read", False),
    ("GET", "/api/reports/adherence"): ("sup", OWN, {"params": {"client_id": 0}}, "report.read", True),
    ("GET", "/api/reports/uptime"): ("sup", OWN, {}, "report.read", False),
    ("GET", "/api/rejections"): ("sup", OWN, {}, "rejections.read", False),
    ("GET", "/api/windows"): ("sup", OWN, {"params": {"client_id": 0}}, "windows.list", True),
    ("GET", "/api/windows/targets"): ("sup", OWN, {}, "window.targets", False),
    ("POST", "/api/windows"): (
        "sup",
        OWN,
        {"json": {"client_id": 0, "ends_ms": NOW + 3_600_000, "reason": "in hospital"}},
        "window.create",
        True,
    ),
    ("POST", "/api/windows/{window_id}/end"): ("sup", OWN, {}, "window.end", True),
    ("GET", "/api/manage/clients"): ("sup", OWN, {}, "station.read", False),
    ("PATCH", "/api/manage/clients/{client_id}"): (
        "sup",
        OWN,
        {"json": {"address": "Dorpsstraat 2"}},
        "station.change",
        True,
    ),
    ("GET", "/api/manage/devices"): ("sup", OWN, {}, "station.read", False),
    ("GET", "/api/clients/{client_id}/schedule"): ("sup", OWN, {}, "station.read", True),
    ("GET", "/api/manage/users"): ("sup", OWN, {}, "station.read", False),
    ("GET", "/api/manage/shifts"): ("sup", OWN, {}, "station.read", False),
}


def _client_param(kwargs: dict[str, Any], client_id: int) -> dict[str, Any]:
    """The request's ``client_id`` placeholders (0) set to the site's client."""
    out: dict[str, Any] = {}
    for key, value in kwargs.items():
        if isinstance(value, dict):
            value = {k: client_id if k == "client_id" and v == 0 else v for k, v in value.items()}
        out[key] = value
    return out


def _audit_as(route: Any) -> bool:
    def walk(dependant: Any) -> bool:
        if isinstance(dependant.call, Require) and dependant.call.audit_as:
            return True
        return any(walk(d) for d in dependant.dependencies)

    return walk(route.dependant)


def test_every_route_with_client_data_is_exercised_or_audited_by_its_guard(world: World) -> None:  # noqa: F811
    """Each route of the schema is public, shows no client data, is walked below, or audits in its guard."""
    for method, path, route in _api_routes(world.api):
        key = (method, path)
        if key in PUBLIC_ROUTES or key in NO_CLIENT_DATA or key in EXERCISED:
            continue
        assert _audit_as(route), f"{method} {path}: no audit row is written (add it to EXERCISED or audit it)"


def test_every_client_data_route_writes_an_audit_row(world: World) -> None:  # noqa: F811
    """Walk every client-data route once: each answers 2xx and adds a row naming the user and the client."""
    window = "0"
    for (method, path), (who, site_name, kwargs, action, names_client) in EXERCISED.items():
        site = world.sites[site_name]
        before = world.last_audit_id()
        url = _fill(path.replace("{window_id}", window), site)
        answer = world.as_(who).request(method, url, **_client_param(kwargs, site.client_id))
        if path == "/api/windows" and method == "POST":
            window = str(answer.json()["id"])
        assert answer.status_code < 300, f"{method} {path}: {answer.status_code} {answer.text[:200]}"
        rows = [r for r in world.audit() if r.id > before and r.action == action]
        assert rows, (
            f"{method} {path}: no {action} row ({[r.action for r in world.audit() if r.id > before]})"
        )
        assert rows[-1].user_id == world.ids[who]
        if names_client:
            assert rows[-1].client_id == site.client_id, f"{method} {path}"


def test_the_live_feed_is_audited_once_per_subscription_with_what_it_showed(world: World) -> None:  # noqa: F811
    """Reproduced: the /api/live feed wrote no audit row; now one per subscription, with the counts."""
    with world.as_("care").websocket_connect("/api/live") as ws:
        assert ws.receive_json()["type"] == "snapshot"
    [row] = world.audit("live.subscribe")
    assert row.user_id == world.ids["care"]
    assert row.detail == "2 alerts of 2 clients"


def test_the_calls_feed_is_audited_once_per_subscription(world: World) -> None:  # noqa: F811
    """The console's calls feed writes one row per subscription naming how many calls it showed."""
    with world.as_("care").websocket_connect("/api/calls/live") as ws:
        assert ws.receive_json()["type"] == "calls"
    [row] = world.audit("calls.subscribe")
    assert row.detail == "0 calls of 0 clients"


def test_monitoring_sessions_are_audit_rows_at_start_and_end(world: World) -> None:  # noqa: F811
    """A look into someone's home: monitoring.start when started, monitoring.end when it ends."""
    own = world.sites["own"].client_id
    with world.sessions.begin() as s:
        from storage.calls_models import VideoConsent

        consent = s.get(VideoConsent, own)
        assert consent is not None
        consent.monitoring_allowed = True
    api = world.as_("care")
    call = api.post("/api/calls", json={"client_id": own, "kind": "monitoring"})
    assert call.status_code == 201, call.text
    [start] = world.audit("monitoring.start")
    assert (start.user_id, start.client_id) == (world.ids["care"], own)
    # Without a broker the ring cannot be sent: the call ends at once, unreachable.
    [end] = world.audit("monitoring.end")
    assert (end.user_id, end.client_id) == (world.ids["care"], own)
    assert call.json()["id"] in end.detail


def test_audit_log_exports_as_csv_with_the_same_filters(world: World) -> None:  # noqa: F811
    """?format=csv is a download of the filtered log; a formula in a reason is neutralised; it is audited."""
    own = world.sites["own"].client_id
    world.as_("wijk").get(f"/api/clients/{own}", params={"reason": "=HYPERLINK(evil)"})
    world.as_("care").get("/api/alerts")
    answer = world.as_("sup").get("/api/audit", params={"format": "csv", "client_id": own})
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/csv")
    assert "attachment" in answer.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(answer.text)))
    assert [r["action"] for r in rows] == ["client.read"]
    assert rows[0]["reason"] == "'=HYPERLINK(evil)"
    assert rows[0]["username"] == "wijk"
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", rows[0]["at_utc"])
    assert world.audit("audit.export")[-1].client_id == own
    assert world.as_("care").get("/api/audit", params={"format": "csv"}).status_code == 403


@pytest.mark.parametrize("role_user", ["care", "wijk"])
def test_audit_csv_is_for_supervisors_and_admins(world: World, role_user: str) -> None:  # noqa: F811
    """Nurses may not export the log."""
    assert world.as_(role_user).get("/api/audit", params={"format": "csv"}).status_code == 403
