"""One access layer: every route asks the one policy (role × action × the client's district).

Walks the OpenAPI schema and the app's WebSockets: each route is in the policy table (a ``require`` guard) or
explicitly public, and a district nurse of Zuid is refused (403/404) every client-scoped route about a client
in Centrum, through the API on SQLite and PostgreSQL.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from access_world import World, world  # noqa: F401
from fastapi.routing import APIRoute, APIWebSocketRoute
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from central.access import ACTIONS, PUBLIC_ROUTES, may
from central.deps import Require
from central.scope import SCOPED_PARAMS

# WebSockets -> the action they ask the policy for; None: a device's socket (its own credentials or the
# ring's token, never a session cookie).
SOCKETS: dict[str, str | None] = {
    "/api/live": "alert.answer",
    "/api/calls/live": "alert.answer",
    "/api/calls/{call_id}/nurse": "alert.answer",
    "/api/calls/{call_id}/device": None,
    "/api/device/calls": None,
}
_PARAM = re.compile(r"\{(\w+)\}")
# Path parameters that name no client's thing (a window may be a client's, but only the care station, which
# sees every district, reaches windows; a shift and a user are the station's own).
NOT_A_CLIENTS = {"window_id", "shift_id", "user_id"}


def _actions(dependant: Any) -> set[str]:
    found = {dependant.call.action} if isinstance(dependant.call, Require) else set()
    for sub in dependant.dependencies:
        found |= _actions(sub)
    return found


def _flat(routes: list[Any]) -> list[Any]:
    """The app's routes, with those of included routers (FastAPI keeps them nested) spelled out."""
    out: list[Any] = []
    for route in routes:
        inner = getattr(route, "original_router", None)
        out.extend(_flat(inner.routes) if inner is not None else [route])
    return out


def _api_routes(api: TestClient) -> list[tuple[str, str, APIRoute]]:
    schema = api.get("/openapi.json").json()["paths"]
    by_path = {(r.path, m): r for r in _flat(api.app.routes) if isinstance(r, APIRoute) for m in r.methods}  # type: ignore[attr-defined]
    routes = [(m.upper(), path, by_path[(path, m.upper())]) for path, ops in schema.items() for m in ops]
    assert len(routes) > 40, "the schema lists the API"
    return routes


def _fill(path: str, site: Any) -> str:
    values = {
        "client_id": site.client_id,
        "alert_id": site.alert_id,
        "visit_id": site.visit_id,
        "call_id": site.call_id,
        "device_id": site.device_id,
        "window_id": 1,
        "shift_id": 1,
        "user_id": 1,
    }
    return _PARAM.sub(lambda m: str(values[m.group(1)]), path)


def test_every_route_is_in_the_policy_or_public(world: World) -> None:  # noqa: F811
    """Each route of the schema has exactly one guard from the table, or is listed as public."""
    for method, path, route in _api_routes(world.api):
        actions = _actions(route.dependant)
        if (method, path) in PUBLIC_ROUTES:
            assert not actions, f"{method} {path} is public and guarded"
            continue
        assert len(actions) == 1, f"{method} {path}: not in the policy table ({actions})"
        assert actions <= ACTIONS.keys()
    sockets = {r.path for r in _flat(world.api.app.routes) if isinstance(r, APIWebSocketRoute)}  # type: ignore[attr-defined]
    assert sockets == SOCKETS.keys()


def test_every_client_scoped_route_names_its_client_by_a_known_parameter(world: World) -> None:  # noqa: F811
    """A path parameter that names a client's thing is one the district resolver knows."""
    for _method, path, _route in _api_routes(world.api):
        for name in _PARAM.findall(path):
            assert name in SCOPED_PARAMS or name in NOT_A_CLIENTS, f"{path}: {name}"


def test_district_nurse_is_refused_every_route_about_another_district(world: World) -> None:  # noqa: F811
    """Every client-scoped route about Centrum's client answers 403/404 to Zuid's district nurse."""
    api = world.as_("wijk")
    checked = 0
    for method, path, _route in _api_routes(world.api):
        names = set(_PARAM.findall(path)) & SCOPED_PARAMS.keys()
        if not names:
            continue
        answer = api.request(method, _fill(path, world.sites["other"]), json={})
        assert answer.status_code in (403, 404), f"{method} {path}: {answer.status_code} {answer.text[:200]}"
        checked += 1
    assert checked >= 15


def test_district_nurse_still_reaches_her_own_district(world: World) -> None:  # noqa: F811
    """The same routes about her own client are not refused for the district (the scope is not a wall)."""
    api = world.as_("wijk")
    for method, path, route in _api_routes(world.api):
        if method != "GET" or not set(_PARAM.findall(path)) & SCOPED_PARAMS.keys():
            continue
        [action] = _actions(route.dependant)
        answer = api.get(_fill(path, world.sites["own"]), params={"reason": "weekly review"})
        if may("district_nurse", action):
            assert answer.status_code == 200, f"{path}: {answer.status_code} {answer.text[:200]}"
        else:
            assert answer.status_code == 403


def test_district_nurse_may_not_read_call_history_of_another_district(world: World) -> None:  # noqa: F811
    """Reproduced: GET /api/clients/{id}/calls answered another district's call history."""
    other = world.sites["other"].client_id
    answer = world.as_("wijk").get(f"/api/clients/{other}/calls")
    assert answer.status_code == 403
    assert answer.json()["detail"] == f"client {other} is outside your district"
    [row] = world.audit("client.read.refused")
    assert row.client_id == other


def test_district_nurse_may_not_read_or_switch_on_monitoring_in_another_district(world: World) -> None:  # noqa: F811
    """Reproduced: she switched on monitoring with auto-answer for another district's client."""
    other = world.sites["other"].client_id
    api = world.as_("wijk")
    assert api.get(f"/api/clients/{other}/video-consent").status_code == 403
    body = {"monitoring_allowed": True, "auto_answer": True}
    assert api.put(f"/api/clients/{other}/video-consent", json=body).status_code == 403
    consent = world.as_("care").get(f"/api/clients/{other}/video-consent").json()
    assert (consent["monitoring_allowed"], consent["auto_answer"]) == (False, False)
    own = world.sites["own"].client_id
    assert world.as_("wijk").put(f"/api/clients/{own}/video-consent", json=body).status_code == 200


def test_district_nurse_may_not_confirm_another_districts_visit(world: World) -> None:  # noqa: F811
    """Reproduced: confirming another district's visit cancelled its "visit overdue" escalation."""
    api = world.as_("wijk")
    answer = api.post(f"/api/visits/{world.sites['other'].visit_id}/arrived")
    assert answer.status_code == 403
    assert api.post(f"/api/visits/{world.sites['own'].visit_id}/arrived").status_code == 200


@pytest.mark.parametrize("path", [p for p, action in SOCKETS.items() if action])
def test_sockets_ask_the_policy(world: World, path: str) -> None:  # noqa: F811
    """A district nurse is refused the console's sockets (4403); no cookie is 4401."""
    url = _fill(path, world.sites["other"])
    for who, code in (("wijk", 4403), (None, 4401)):
        api = world.as_(who) if who else world.api
        if who is None:
            api.cookies.clear()
        with pytest.raises(WebSocketDisconnect) as closed, api.websocket_connect(url) as ws:
            for _ in range(3):
                ws.receive_json()
        assert closed.value.code == code, (who, path)
