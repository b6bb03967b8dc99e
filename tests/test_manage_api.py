"""The management API on a real database and the embedded Mosquitto: clients, devices, schedules, users.

A schedule change goes to the dispenser as a real ``set_schedule`` command over MQTT (received here by a
client with the device's own credentials), and the device's cmdack confirms it through apply_command_ack.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from helpers import MqttProbe, service_config
from sqlalchemy import select

from care.commands import apply_command_ack
from carealarm.broker import EmbeddedBroker
from central.app import CentralContext, create_app
from central.auth import hash_password, verify_password
from central.calls.signalling import CallsConfig
from central.feed import Broadcaster
from messaging.accounts import DynsecAccounts
from messaging.mqtt import MqttConfig
from protocol.v1 import command_topic, decode_command
from storage.db import SessionFactory
from storage.models import MedicationDose
from storage.registry import add_client, add_user

NOW = 1_800_000_000_000
HOUR = 3_600_000


@pytest.fixture
def api(sessions: SessionFactory, embedded_broker: EmbeddedBroker) -> Iterator[TestClient]:
    with sessions.begin() as s:
        for username, role in (("sup", "supervisor"), ("adm", "admin"), ("nurse", "care_nurse")):
            add_user(
                s,
                username=username,
                display_name=f"{username.title()} Name",
                role=role,
                password_hash=hash_password(f"{username}-pw"),
                now_ms=NOW,
            )
        add_client(s, name="Mevr. Jansen", address="Dorpsstraat 1", now_ms=NOW)
    broadcaster = Broadcaster(sessions, poll_interval_s=0.1)
    ctx = CentralContext(
        sessions=sessions,
        broadcaster=broadcaster,
        notify_alerts=broadcaster.wake,
        clock_ms=lambda: NOW,
        calls=CallsConfig(mqtt=service_config(embedded_broker)),
        device_accounts=DynsecAccounts(service_config(embedded_broker)),
    )
    app = create_app(ctx)
    with TestClient(app) as client:
        yield client


def sign_in(api: TestClient, username: str) -> None:
    response = api.post("/api/session", json={"username": username, "password": f"{username}-pw"})
    assert response.status_code == 200, response.text


def client_id(api: TestClient) -> int:
    return int(api.get("/api/manage/clients").json()[0]["id"])


def provision(api: TestClient, device_id: str = "disp-1", kind: str = "dispenser") -> dict[str, object]:
    response = api.post(
        "/api/manage/devices",
        json={"device_id": device_id, "client_id": client_id(api), "kind": kind, "label": "Kitchen"},
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


def test_supervisor_creates_and_updates_a_client(api: TestClient) -> None:
    """A client is created, then renamed; fields left out keep their value."""
    sign_in(api, "sup")
    created = api.post("/api/manage/clients", json={"name": "Dhr. de Vries", "district": "Noord"})
    assert created.status_code == 201
    cid = created.json()["id"]
    updated = api.patch(f"/api/manage/clients/{cid}", json={"name": "Dhr. P. de Vries"}).json()
    assert (updated["name"], updated["district"]) == ("Dhr. P. de Vries", "Noord")
    assert api.patch("/api/manage/clients/99999", json={"name": "x"}).status_code == 404


def test_client_validation_errors_are_422(api: TestClient) -> None:
    """An empty name is refused with a message naming the field."""
    sign_in(api, "sup")
    response = api.post("/api/manage/clients", json={"name": ""})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"][-1] == "name"


def test_provisioned_device_connects_with_the_password_returned_once(
    api: TestClient, embedded_broker: EmbeddedBroker
) -> None:
    """An admin provisions a device; the broker holds it at once and the returned password (with the device id
    as client id) lets it connect."""
    sign_in(api, "adm")
    device = provision(api)
    assert (device["broker_updated"], device["mqtt_client_id"]) == (True, "disp-1")
    assert "password" not in api.get("/api/manage/devices").json()[0]
    probe = MqttProbe(
        MqttConfig("127.0.0.1", embedded_broker.port, "disp-1", str(device["password"])), client_id="disp-1"
    )
    try:
        assert probe.connected()
    finally:
        probe.close()


def test_supervisor_may_not_provision_devices(api: TestClient) -> None:
    """Provisioning creates broker credentials: admins only (403 with the reason)."""
    sign_in(api, "sup")
    response = api.post(
        "/api/manage/devices", json={"device_id": "d9", "client_id": client_id(api), "kind": "dispenser"}
    )
    assert response.status_code == 403 and "admins only" in response.json()["detail"]


def test_only_admins_rotate_and_managers_decommission(api: TestClient) -> None:
    """Rotating creates broker credentials (admins only); decommissioning is the daily running of the station
    (supervisors and admins); a care nurse does neither."""
    sign_in(api, "adm")
    provision(api)
    sign_in(api, "sup")
    rotate = api.post("/api/manage/devices/disp-1/rotate")
    assert rotate.status_code == 403 and "admins only" in rotate.json()["detail"]
    sign_in(api, "nurse")
    assert api.delete("/api/manage/devices/disp-1").status_code == 403
    sign_in(api, "sup")
    removed = api.delete("/api/manage/devices/disp-1")
    assert removed.status_code == 200 and removed.json()["decommissioned_ms"] == NOW
    assert removed.json()["broker_updated"] is True


def test_device_changes_name_the_device_or_say_why_not(api: TestClient) -> None:
    """An unknown device is 404; a decommissioned one keeps its id (no reuse), cannot be rotated (409) and is
    listed as decommissioned; removing it again is allowed (the broker is told again)."""
    sign_in(api, "adm")
    assert api.post("/api/manage/devices/nope/rotate").status_code == 404
    assert api.delete("/api/manage/devices/nope").status_code == 404
    provision(api)
    assert api.delete("/api/manage/devices/disp-1").status_code == 200
    again = api.delete("/api/manage/devices/disp-1")
    assert again.status_code == 200 and again.json()["decommissioned_ms"] == NOW
    rotate = api.post("/api/manage/devices/disp-1/rotate")
    assert rotate.status_code == 409 and "decommissioned" in rotate.json()["detail"]
    reuse = api.post(
        "/api/manage/devices", json={"device_id": "disp-1", "client_id": client_id(api), "kind": "dispenser"}
    )
    assert reuse.status_code == 422 and "decommissioned" in reuse.json()["detail"]
    assert [d["decommissioned_ms"] for d in api.get("/api/manage/devices").json()] == [NOW]


def test_a_device_id_may_not_take_the_services_name(api: TestClient) -> None:
    """carealarm… ids are the service's own connections (user name, client ids): refused for devices."""
    sign_in(api, "adm")
    for device_id in ("carealarm", "carealarm-gateway-gw1-alarms", "CareAlarm-x"):
        response = api.post(
            "/api/manage/devices",
            json={"device_id": device_id, "client_id": client_id(api), "kind": "dispenser"},
        )
        assert response.status_code == 422 and "reserved" in response.json()["detail"], device_id


def test_bad_device_is_422_with_the_registry_reason(api: TestClient) -> None:
    """A duplicate id or an unknown kind is refused with a clear message."""
    sign_in(api, "adm")
    provision(api)
    again = api.post(
        "/api/manage/devices", json={"device_id": "disp-1", "client_id": client_id(api), "kind": "dispenser"}
    )
    assert again.status_code == 422 and again.json()["detail"] == "device disp-1 exists already"
    kind = api.post(
        "/api/manage/devices", json={"device_id": "x1", "client_id": client_id(api), "kind": "toaster"}
    )
    assert kind.status_code == 422 and "device kind must be one of" in kind.json()["detail"]


def test_schedule_change_is_sent_to_the_dispenser_and_confirmed_by_its_cmdack(
    api: TestClient, sessions: SessionFactory, embedded_broker: EmbeddedBroker
) -> None:
    """PUT schedule publishes set_schedule on the device's cmd topic; it awaits confirmation until the ack."""
    sign_in(api, "adm")
    device = provision(api)
    probe = MqttProbe(
        MqttConfig("127.0.0.1", embedded_broker.port, "disp-1", str(device["password"])), client_id="disp-1"
    )
    try:
        assert probe.connected()
        probe.subscribe(command_topic("disp-1"))
        doses = [
            {"dose_id": "morning", "at": "08:00", "label": "Metformine"},
            {"dose_id": "night", "at": "21:30"},
        ]
        body = api.put(f"/api/clients/{client_id(api)}/schedule", json={"doses": doses}).json()
        assert body["command"]["state"] == "awaiting_confirmation"
        topic, payload, _retained = probe.next(timeout=10)
    finally:
        probe.close()
    command = decode_command(payload)
    assert (topic, command.command, command.cmd_id) == (
        "carealarm/v1/devices/disp-1/cmd",
        "set_schedule",
        body["command"]["cmd_id"],
    )
    assert command.arg("version") == 1
    assert command.arg("doses") == doses
    with sessions.begin() as s:
        assert apply_command_ack(s, "disp-1", command.cmd_id, "done", NOW + 5000) is not None
    after = api.get(f"/api/clients/{client_id(api)}/schedule").json()
    assert (after["command"]["state"], after["command"]["result_ms"]) == ("confirmed", NOW + 5000)
    assert [d["dose_id"] for d in after["doses"]] == ["morning", "night"]


def test_schedule_replaces_the_stored_doses(api: TestClient, sessions: SessionFactory) -> None:
    """A second PUT replaces every dose of the first, and the version goes up."""
    sign_in(api, "adm")
    provision(api)
    cid = client_id(api)
    api.put(f"/api/clients/{cid}/schedule", json={"doses": [{"dose_id": "a", "at": "08:00"}]})
    api.put(f"/api/clients/{cid}/schedule", json={"doses": [{"dose_id": "b", "at": "12:00"}]})
    with sessions() as s:
        assert [(d.dose_id, d.device_id) for d in s.query(MedicationDose).all()] == [("b", "disp-1")]


def test_schedule_without_a_dispenser_is_stored_but_not_sent(api: TestClient) -> None:
    """With no dispenser the schedule is kept and the page is told there is none to send it to."""
    sign_in(api, "sup")
    body = api.put(
        f"/api/clients/{client_id(api)}/schedule", json={"doses": [{"dose_id": "a", "at": "08:00"}]}
    )
    assert body.status_code == 200
    assert (body.json()["command"]["state"], body.json()["dispenser_id"]) == ("no_dispenser", None)


def test_an_empty_or_blank_dose_label_is_no_label(api: TestClient, sessions: SessionFactory) -> None:
    """A dose with an empty or blank label (schemathesis found the empty one made a 500) is a dose without a
    label: stored and sent without one; other labels are kept, trimmed."""
    sign_in(api, "adm")
    provision(api)
    doses = [
        {"dose_id": "a", "at": "08:00", "label": ""},
        {"dose_id": "b", "at": "12:00", "label": "   "},
        {"dose_id": "c", "at": "18:00", "label": " Metformine "},
    ]
    answer = api.put(f"/api/clients/{client_id(api)}/schedule", json={"doses": doses})
    assert answer.status_code == 200, answer.text
    with sessions() as s:
        labels = {d.dose_id: d.label for d in s.query(MedicationDose).all()}
    assert labels == {"a": "", "b": "", "c": "Metformine"}  # the table keeps "" for no label


def test_bad_schedules_are_422(api: TestClient) -> None:
    """A time that is not HH:MM, a repeated dose id and more than 24 doses are refused."""
    sign_in(api, "sup")
    url = f"/api/clients/{client_id(api)}/schedule"
    bad_time = api.put(url, json={"doses": [{"dose_id": "a", "at": "25:00"}]})
    assert bad_time.status_code == 422 and bad_time.json()["detail"][0]["loc"][-1] == "at"
    twice = api.put(url, json={"doses": [{"dose_id": "a", "at": "08:00"}, {"dose_id": "a", "at": "09:00"}]})
    assert twice.status_code == 422 and "dose_id a appears twice" in twice.json()["detail"][0]["msg"]
    many = [{"dose_id": f"d{i}", "at": "08:00"} for i in range(25)]
    assert api.put(url, json={"doses": many}).status_code == 422


def test_a_cmdack_for_another_device_is_ignored(api: TestClient, sessions: SessionFactory) -> None:
    """A device cannot confirm a command that was sent to another device."""
    sign_in(api, "adm")
    provision(api)
    body = api.put(f"/api/clients/{client_id(api)}/schedule", json={"doses": []}).json()
    with sessions.begin() as s:
        assert apply_command_ack(s, "other-device", body["command"]["cmd_id"], "done", NOW) is None
    assert (
        api.get(f"/api/clients/{client_id(api)}/schedule").json()["command"]["state"]
        == "awaiting_confirmation"
    )


def test_roster_add_list_delete(api: TestClient) -> None:
    """A supervisor puts a nurse on the roster, sees the shift, and takes it off again."""
    sign_in(api, "sup")
    nurse = next(u for u in api.get("/api/manage/users").json() if u["username"] == "nurse")
    shift = {"user_id": nurse["id"], "role": "care_nurse", "starts_ms": NOW + HOUR, "ends_ms": NOW + 9 * HOUR}
    created = api.post("/api/manage/shifts", json=shift)
    assert created.status_code == 201 and created.json()["user_name"] == "Nurse Name"
    assert [s["id"] for s in api.get("/api/manage/shifts").json()] == [created.json()["id"]]
    assert api.delete(f"/api/manage/shifts/{created.json()['id']}").status_code == 204
    assert api.get("/api/manage/shifts").json() == []


def test_bad_shifts_are_422(api: TestClient) -> None:
    """A shift that ends before it starts, lasts over a day or names nobody is refused with the reason."""
    sign_in(api, "sup")
    base = {"user_id": 1, "role": "care_nurse", "starts_ms": NOW}
    for extra, message in (
        ({"ends_ms": NOW - 1}, "end after it starts"),
        ({"ends_ms": NOW + 25 * HOUR}, "at most 24 hours"),
        ({"ends_ms": NOW + HOUR, "user_id": 999}, "no user 999"),
    ):
        response = api.post("/api/manage/shifts", json={**base, **extra})
        assert response.status_code == 422 and message in response.json()["detail"]


def test_admin_adds_a_user_whose_password_is_hashed(api: TestClient, sessions: SessionFactory) -> None:
    """A new user can sign in with their password; only an argon2 hash is stored."""
    sign_in(api, "adm")
    body = {
        "username": "wijk1",
        "display_name": "Wijk Verpleegkundige",
        "role": "district_nurse",
        "district": "Noord",
        "email": "wijk1@example.org",
        "password": "long-enough-pw",
    }
    created = api.post("/api/manage/users", json=body)
    assert created.status_code == 201 and "password" not in created.json()
    with sessions() as s:
        user = verify_password(s, "wijk1", "long-enough-pw")
    assert user is not None and (user.role, user.district) == ("district_nurse", "Noord")


def test_user_validation_errors_are_422(api: TestClient) -> None:
    """A short password, an unknown role, a bad e-mail and a taken name are each refused clearly."""
    sign_in(api, "adm")
    good = {"username": "u1", "display_name": "U", "role": "care_nurse", "password": "long-enough-pw"}
    for change, message in (
        ({"password": "short"}, "at least 10 characters"),
        ({"role": "king"}, "role must be one of"),
        ({"email": "not-an-address"}, "email must look like"),
    ):
        response = api.post("/api/manage/users", json={**good, **change})
        assert response.status_code == 422 and message in response.json()["detail"][0]["msg"], response.text
    taken = api.post("/api/manage/users", json={**good, "username": "nurse"})
    assert taken.status_code == 422 and taken.json()["detail"] == "user nurse exists already"


def test_only_admins_add_users_and_nurses_manage_nothing(api: TestClient) -> None:
    """A supervisor may not add users; a care nurse may not even list clients (403 with reasons)."""
    sign_in(api, "sup")
    body = {"username": "x1", "display_name": "X", "role": "admin", "password": "long-enough-pw"}
    assert api.post("/api/manage/users", json=body).status_code == 403
    sign_in(api, "nurse")
    response = api.get("/api/manage/clients")
    assert response.status_code == 403 and "supervisors and admins only" in response.json()["detail"]


def test_a_removed_device_takes_its_state_alerts_with_it_but_never_an_alarm(sessions: SessionFactory) -> None:
    """Decommissioning a button closes its offline alert (``device_removed``); its open alarm stays."""
    from care.alert_store import resolve_device_alerts
    from monitor.events import handle_pending_events
    from storage.models import Alert, DeviceEvent
    from storage.registry import add_client, add_device, decommission_device

    with sessions.begin() as s:
        client = add_client(s, name="Mevr. Bos", now_ms=1)
        add_device(s, device_id="btn-rm", client_id=client.id, kind="alarm_button", now_ms=1)
        for n, (kind, body) in enumerate((("alarm", {}), ("status", {"online": False}))):
            s.add(
                DeviceEvent(
                    device_id="btn-rm",
                    msg_id=f"m{n}",
                    kind=kind,
                    device_ts_ms=2,
                    received_ms=2,
                    payload=json.dumps(body),
                )
            )
    with sessions.begin() as s:
        handle_pending_events(s, 3)
    with sessions.begin() as s:
        decommission_device(s, device_id="btn-rm", now_ms=4)
        assert resolve_device_alerts(s, "btn-rm", 4) == 1
    with sessions() as s:
        states = {a.kind: (a.state, a.outcome) for a in s.scalars(select(Alert))}
    assert states == {"alarm": ("open", None), "offline": ("resolved", "device_removed")}
