"""A msg_id used again for a different message is never silent: refused with ``msg_id_reused``, or (an
alarm) stored as a new event flagged with the device's msg_id. An identical resend stays a resend."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from helpers import MqttProbe, service_config, wait_for
from hypothesis import assume, given
from sqlalchemy import select
from test_protocol import messages

from carealarm.broker import EmbeddedBroker
from gateway.ingest import Inbound, Plan, StoredEvent, judge_reuse, plan_batch, reused_alarm_msg_id
from gateway.service import Gateway
from gateway.store import store_plan
from messaging.accounts import mosquitto_hash
from messaging.mqtt import MqttConfig
from protocol.v1 import (
    MAX_PAYLOAD_BYTES,
    Ack,
    Alarm,
    EventMessage,
    Heartbeat,
    Status,
    decode,
    decode_ack,
    encode,
    encode_ack,
    event_body,
    is_valid_id,
)
from storage.db import SessionFactory
from storage.models import DeadLetter, DeviceEvent
from storage.registry import add_client, add_device

NOW = int(time.time() * 1000)  # device clocks in these tests are right
HOUR = 3_600_000


def _events(sessions: SessionFactory, device_id: str) -> list[DeviceEvent]:
    with sessions() as s:
        return list(
            s.scalars(select(DeviceEvent).where(DeviceEvent.device_id == device_id).order_by(DeviceEvent.id))
        )


def _dead_letters(sessions: SessionFactory, device_id: str) -> list[DeadLetter]:
    with sessions() as s:
        return list(s.scalars(select(DeadLetter).where(DeadLetter.device_id == device_id)))


def _provision(sessions: SessionFactory, device_id: str, password: str | None = None) -> None:
    with sessions.begin() as s:
        client = add_client(s, name="Mevr. Herhaal", now_ms=NOW)
        add_device(
            s, device_id=device_id, client_id=client.id, kind="alarm_button", now_ms=NOW, password=password
        )


# -- end to end: a device on the embedded broker, the gateway, the database ----------------------------


@dataclass
class Rig:
    sessions: SessionFactory
    gateway: Gateway
    device_id: str
    device: MqttProbe  # the device's own MQTT connection (its credentials), subscribed to its ack topic

    def send(self, kind: str, payload: dict[str, Any] | str) -> dict[str, Any]:
        """Publish as the device at QoS 1 and return the application ack it receives."""
        text = payload if isinstance(payload, str) else json.dumps(payload)
        topic = f"carealarm/v1/devices/{self.device_id}/{kind}"
        self.device.client.publish(topic, text, qos=1).wait_for_publish(5)
        _topic, raw, _retained = self.device.next(timeout=10)
        ack: dict[str, Any] = json.loads(raw)
        return ack

    def events(self) -> list[DeviceEvent]:
        return _events(self.sessions, self.device_id)

    def dead_letters(self) -> list[DeadLetter]:
        return _dead_letters(self.sessions, self.device_id)


def _connect_device(broker: EmbeddedBroker, device_id: str, password: str) -> MqttProbe:
    """Connect with the device's credentials, waiting for the broker to have re-read its password file."""
    cfg = MqttConfig("127.0.0.1", broker.port, device_id, password)
    deadline = time.monotonic() + 10
    while True:
        probe = MqttProbe(cfg, client_id=device_id)
        if probe.connected():
            return probe
        probe.close()
        if time.monotonic() > deadline:
            raise AssertionError(f"device {device_id} could not connect to the embedded broker")
        time.sleep(0.2)


@pytest.fixture
def rig(embedded_broker: EmbeddedBroker, sessions: SessionFactory) -> Iterator[Rig]:
    run = uuid.uuid4().hex[:8]
    device_id, password = f"btn-{run}", f"pw-{run}"
    _provision(sessions, device_id, password)
    embedded_broker.reload([(device_id, mosquitto_hash(password))])
    gateway = Gateway(
        mqtt=service_config(embedded_broker), sessions=sessions, name=f"reuse-{run}", liveness_flush_s=0.5
    )
    gateway.start()
    device: MqttProbe | None = None
    try:
        assert gateway.wait_connected(10), "gateway did not connect"
        device = _connect_device(embedded_broker, device_id, password)
        device.subscribe(f"carealarm/v1/devices/{device_id}/ack")
        time.sleep(0.2)  # let the gateway's SUBSCRIBE land
        yield Rig(sessions, gateway, device_id, device)
    finally:
        if device is not None:
            device.close()
        gateway.stop()


REUSED_EVENTS = {
    # A dose event: a different dose event under the msg_id of an earlier one.
    "dose": (
        {"msg_id": "r-1", "ts": NOW - HOUR, "event": "due", "dose_id": "d-0800"},
        {"msg_id": "r-1", "ts": NOW, "event": "taken", "dose_id": "d-0800"},
    ),
    # A device whose counter restarted after a fault: the same report, only the time differs.
    "fault": (
        {"msg_id": "r-1", "ts": NOW - HOUR, "fault": "reboot"},
        {"msg_id": "r-1", "ts": NOW, "fault": "reboot"},
    ),
}


@pytest.mark.parametrize("kind", sorted(REUSED_EVENTS))
def test_different_event_under_a_used_msg_id_is_refused_as_msg_id_reused(rig: Rig, kind: str) -> None:
    """A non-alarm event under a used msg_id gets msg_id_reused, a dead letter and a count; not stored."""
    first, second = REUSED_EVENTS[kind]
    assert rig.send(kind, first) == {"msg_id": "r-1", "status": "accepted"}
    assert rig.send(kind, second) == {"msg_id": "r-1", "status": "rejected", "reason": "msg_id_reused"}
    events = rig.events()
    assert [(e.msg_id, e.kind, e.device_ts_ms, e.reused_msg_id) for e in events] == [
        ("r-1", kind, NOW - HOUR, None)
    ]
    letters = rig.dead_letters()
    assert [(d.reason, json.loads(d.payload)) for d in letters] == [("msg_id_reused", second)]
    assert rig.gateway.metrics.rejected["msg_id_reused"] == 1
    metric = 'carealarm_gateway_messages_rejected_total{reason="msg_id_reused"} 1'
    assert metric in rig.gateway.metrics.render()


def test_alarm_under_a_used_msg_id_is_stored_as_a_new_flagged_event(rig: Rig) -> None:
    """An alarm under a used msg_id is taken: a second event, flagged with the device's msg_id, acked."""
    assert rig.send("alarm", {"msg_id": "r-2", "ts": NOW - HOUR})["status"] == "accepted"
    ack = rig.send("alarm", {"msg_id": "r-2", "ts": NOW, "alarm_kind": "fall"})
    assert ack == {"msg_id": "r-2", "status": "accepted", "warning": "msg_id_reused"}
    first, second = rig.events()
    assert (first.msg_id, first.reused_msg_id, first.device_ts_ms) == ("r-2", None, NOW - HOUR)
    assert second.msg_id.startswith("~") and second.msg_id != "r-2"
    assert (second.kind, second.reused_msg_id, second.device_ts_ms) == ("alarm", "r-2", NOW)
    assert json.loads(second.payload)["alarm_kind"] == "fall"
    assert rig.dead_letters() == []
    assert rig.gateway.metrics.rejected["msg_id_reused_accepted"] == 1


def test_resent_reused_alarm_is_stored_once(rig: Rig) -> None:
    """A resend of an alarm that reused a msg_id finds its derived event: acked again, nothing stored."""
    rig.send("alarm", {"msg_id": "r-3", "ts": NOW - HOUR})
    reused = {"msg_id": "r-3", "ts": NOW, "alarm_kind": "pendant"}
    assert rig.send("alarm", reused)["warning"] == "msg_id_reused"
    assert len(rig.events()) == 2
    # The device did not hear that ack and resends, in other bytes: still the same alarm.
    ack = rig.send("alarm", f'{{ "alarm_kind": "pendant", "ts": {NOW}, "msg_id": "r-3" }}')
    assert ack == {"msg_id": "r-3", "status": "accepted", "warning": "msg_id_reused"}
    events = rig.events()
    assert len(events) == 2
    assert [e.reused_msg_id for e in events] == [None, "r-3"]


IDENTICAL_RESENDS = {
    # Field order, whitespace, a field the protocol does not list and a null field are not the content.
    "dose": (
        {"msg_id": "r-4", "ts": NOW, "event": "due", "dose_id": "d-0800", "due_ts": NOW},
        f'{{"due_ts": {NOW}, "dose_id": "d-0800", "extra": 1, "event": "due", "ts": {NOW}, "msg_id": "r-4"}}',
    ),
    # An absent alarm_kind is the default, "button".
    "alarm": (
        {"msg_id": "r-4", "ts": NOW},
        f'{{"msg_id":"r-4","ts":{NOW},"alarm_kind":"button","cancels":null}}',
    ),
}


@pytest.mark.parametrize("kind", sorted(IDENTICAL_RESENDS))
def test_identical_resend_in_other_bytes_is_still_a_resend(rig: Rig, kind: str) -> None:
    """The same event re-encoded is a resend: acked accepted without a warning, stored once, not counted."""
    first, resend = IDENTICAL_RESENDS[kind]
    assert rig.send(kind, first) == {"msg_id": "r-4", "status": "accepted"}
    assert rig.send(kind, resend) == {"msg_id": "r-4", "status": "accepted"}
    assert [e.msg_id for e in rig.events()] == ["r-4"]
    assert rig.dead_letters() == []
    assert not rig.gateway.metrics.rejected
    wait_for(lambda: rig.gateway.metrics.duplicates == 1, 5, what="the resend counted as a duplicate")


# -- the store on its own: one batch, and two writers at once -------------------------------------------


def _inbound(kind: str, body: dict[str, Any], device_id: str = "btn-1", mid: int = 1) -> Inbound:
    return Inbound(f"carealarm/v1/devices/{device_id}/{kind}", json.dumps(body).encode(), mid, 1, NOW)


def _store(sessions: SessionFactory, *inbound: Inbound) -> None:
    with sessions.begin() as s:
        store_plan(s, plan_batch(inbound, lambda _d: True, NOW), [])


def test_two_events_under_one_msg_id_in_one_batch(sessions: SessionFactory) -> None:
    """In one batch the second, different dose event under a msg_id is refused, not taken as a copy."""
    _provision(sessions, "btn-1")
    due = _inbound("dose", {"msg_id": "b-1", "ts": NOW, "event": "due", "dose_id": "d-1"}, mid=1)
    taken = _inbound("dose", {"msg_id": "b-1", "ts": NOW + 1, "event": "taken", "dose_id": "d-1"}, mid=2)
    _store(sessions, due, taken)
    stored = [(e.msg_id, json.loads(e.payload)["event"]) for e in _events(sessions, "btn-1")]
    assert stored == [("b-1", "due")]
    letters = [(d.reason, d.payload) for d in _dead_letters(sessions, "btn-1")]
    assert letters == [("msg_id_reused", taken.payload)]


def test_two_alarms_under_one_msg_id_in_one_batch(sessions: SessionFactory) -> None:
    """In one batch two different alarms under a msg_id are both stored, the second flagged."""
    _provision(sessions, "btn-1")
    _store(
        sessions,
        _inbound("alarm", {"msg_id": "b-2", "ts": NOW}, mid=1),
        _inbound("alarm", {"msg_id": "b-2", "ts": NOW + 5}, mid=2),
        _inbound("alarm", {"msg_id": "b-2", "ts": NOW + 5}, mid=3),  # a copy of the second
    )
    events = _events(sessions, "btn-1")
    assert [(e.device_ts_ms, e.reused_msg_id) for e in events] == [(NOW, None), (NOW + 5, "b-2")]
    assert events[0].msg_id == "b-2" and events[1].msg_id.startswith("~")
    assert _dead_letters(sessions, "btn-1") == []


def test_cancel_under_a_used_msg_id_is_refused(sessions: SessionFactory) -> None:
    """A cancel is not an alarm: under a used msg_id it is refused (the alarm it names may be the old one)."""
    _provision(sessions, "btn-1")
    _store(sessions, _inbound("alarm", {"msg_id": "c-1", "ts": NOW}))
    _store(sessions, _inbound("alarm", {"msg_id": "c-1", "ts": NOW + 5, "cancels": "c-0"}))
    assert [e.msg_id for e in _events(sessions, "btn-1")] == ["c-1"]
    assert [d.reason for d in _dead_letters(sessions, "btn-1")] == ["msg_id_reused"]


def test_concurrent_writers_judge_against_the_committed_row(sessions: SessionFactory) -> None:
    """Two gateways storing one msg_id at once: the second waits for the first's row and refuses its own."""
    _provision(sessions, "btn-1")
    first = _inbound("dose", {"msg_id": "p-1", "ts": NOW, "event": "due", "dose_id": "d-1"})
    second = _inbound("dose", {"msg_id": "p-1", "ts": NOW + 1, "event": "missed", "dose_id": "d-1"})
    errors: list[BaseException] = []

    def other_gateway() -> None:
        try:
            _store(sessions, second)
        except BaseException as exc:  # reported in the test's own thread
            errors.append(exc)

    with sessions.begin() as s:
        store_plan(s, plan_batch([first], lambda _d: True, NOW), [])
        other = threading.Thread(target=other_gateway)
        other.start()
        time.sleep(0.5)
        # The other writer cannot decide before this transaction ends: it waits on the row (PostgreSQL) or
        # on the write lock (SQLite).
        assert other.is_alive()
    other.join(timeout=30)
    assert not other.is_alive() and errors == []
    assert [json.loads(e.payload)["event"] for e in _events(sessions, "btn-1")] == ["due"]
    assert [d.reason for d in _dead_letters(sessions, "btn-1")] == ["msg_id_reused"]


# -- the pure parts ---------------------------------------------------------------------------------------


def _fate(topic: str, message: EventMessage, holds: EventMessage) -> str:
    """What judge_reuse makes of ``message`` when its (device, msg_id) holds ``holds``."""
    plan = Plan(events=[(Inbound(topic, b"", 1, 1, NOW), message)])
    key = (holds.device_id, holds.msg_id)
    reuse = judge_reuse(plan, set(), {key: StoredEvent(holds.kind, event_body(holds))})
    return "copy" if reuse.accepted else "alarm" if reuse.alarms else reuse.refused[0].reason


@given(messages.filter(lambda m: not isinstance(m, Heartbeat | Status)))
def test_re_encoding_is_never_reuse_and_another_time_always_is(message: EventMessage) -> None:
    """Field order, whitespace, escapes and unlisted fields make a copy; another ts makes a reuse."""
    topic, payload = encode(message)
    body = json.loads(payload)
    resent = json.dumps({"zz_unlisted": [1], **dict(reversed(body.items()))}, indent=1).encode()
    assume(len(resent) <= MAX_PAYLOAD_BYTES)
    copy = decode(topic, resent)
    assert not isinstance(copy, Heartbeat | Status)
    assert _fate(topic, copy, holds=message) == "copy"
    later = dataclasses.replace(message, ts=message.ts + 1)
    assert _fate(topic, later, holds=message) == ("alarm" if isinstance(message, Alarm) else "msg_id_reused")


def test_derived_msg_id_is_deterministic_and_outside_the_device_alphabet() -> None:
    """A reused alarm's id is one per alarm, the same for its copies, fits the column, is never a device's."""
    one = reused_alarm_msg_id(Alarm("btn-1", "m-" + "9" * 62, NOW, "fall"))
    assert one == reused_alarm_msg_id(Alarm("btn-1", "m-" + "9" * 62, NOW, "fall"))
    assert one != reused_alarm_msg_id(Alarm("btn-1", "m-" + "9" * 62, NOW + 1, "fall"))
    assert one.startswith("~") and not is_valid_id(one) and len(one) <= 64


def test_accepted_ack_carries_a_warning() -> None:
    """An ack may say "accepted, but": the warning survives the round trip; an ack without one has none."""
    ack = Ack("m-1", "accepted", warning="msg_id_reused")
    assert json.loads(encode_ack(ack)) == {"msg_id": "m-1", "status": "accepted", "warning": "msg_id_reused"}
    assert decode_ack(encode_ack(ack)) == ack
    assert decode_ack(b'{"msg_id":"m-1","status":"accepted"}').warning is None
