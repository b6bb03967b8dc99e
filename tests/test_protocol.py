"""The protocol v1 codec: round trips, every rejection reason, and fuzzing with hypothesis."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.v1 import (
    ALARM_KINDS,
    DOSE_EVENTS,
    MAX_PAYLOAD_BYTES,
    Ack,
    Alarm,
    DoseEvent,
    Heartbeat,
    ProtocolError,
    Status,
    decode,
    decode_ack,
    device_id_from_topic,
    encode,
    encode_ack,
)

ids = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}", fullmatch=True)
ts = st.integers(0, 10**15)
messages = st.one_of(
    st.builds(
        Heartbeat,
        ids,
        ids,
        ts,
        st.none() | st.integers(0, 100),
        st.none() | st.integers(-200, 0),
        st.none() | st.text(min_size=1, max_size=64),
        st.none() | st.integers(5, 86_400),
    ),
    st.builds(Alarm, ids, ids, ts, st.sampled_from(sorted(ALARM_KINDS))),
    st.builds(DoseEvent, ids, ids, ts, st.sampled_from(sorted(DOSE_EVENTS)), ids, st.none() | ts),
    st.builds(Status, ids, st.booleans()),
)


@given(messages)
def test_round_trip(message: object) -> None:
    """Every valid message survives encode then decode unchanged."""
    topic, payload = encode(message)  # type: ignore[arg-type]
    assert decode(topic, payload) == message


@given(st.text(max_size=80), st.binary(max_size=600))
def test_any_bytes_parse_or_reject(topic: str, payload: bytes) -> None:
    """Any topic and byte string is either parsed or rejected with ProtocolError, never another exception."""
    try:
        decode(topic, payload)
    except ProtocolError as exc:
        assert exc.reason


@given(
    st.sampled_from(["alarm", "heartbeat", "dose"]),
    st.dictionaries(
        st.sampled_from(["msg_id", "ts", "alarm_kind", "battery", "event", "dose_id", "signal"]),
        st.one_of(
            st.none(),
            st.booleans(),
            st.integers(),
            st.floats(allow_nan=False),
            st.text(max_size=70),
            st.lists(st.integers(), max_size=3),
        ),
    ),
)
def test_any_json_object_parses_or_rejects(kind: str, body: dict[str, object]) -> None:
    """Structurally plausible JSON with arbitrary field values never raises anything but ProtocolError."""
    try:
        decode(f"carealarm/v1/devices/dev-1/{kind}", json.dumps(body).encode())
    except ProtocolError as exc:
        assert exc.reason in {"missing_field", "bad_type", "bad_value"}


@pytest.mark.parametrize(
    ("topic", "payload", "reason"),
    [
        ("carealarm/v1/devices/dev-1/alarm", b"{not json", "bad_json"),
        ("carealarm/v1/devices/dev-1/alarm", b"\xff\xfe", "bad_json"),
        ("carealarm/v1/devices/dev-1/alarm", b"[1,2]", "bad_json"),
        ("carealarm/v1/devices/dev-1/alarm", b'{"ts": 1}', "missing_field"),
        ("carealarm/v1/devices/dev-1/alarm", b'{"msg_id": "m1"}', "missing_field"),
        ("carealarm/v1/devices/dev-1/alarm", b'{"msg_id": "m1", "ts": "yesterday"}', "bad_type"),
        ("carealarm/v1/devices/dev-1/alarm", b'{"msg_id": "m1", "ts": true}', "bad_type"),
        ("carealarm/v1/devices/dev-1/alarm", b'{"msg_id": "m1", "ts": 1.5}', "bad_type"),
        ("carealarm/v1/devices/dev-1/alarm", b'{"msg_id": "m 1", "ts": 1}', "bad_value"),
        ("carealarm/v1/devices/dev-1/alarm", b'{"msg_id": "m1", "ts": -1}', "bad_value"),
        (
            "carealarm/v1/devices/dev-1/alarm",
            b'{"msg_id": "m1", "ts": 1, "alarm_kind": "dance"}',
            "bad_value",
        ),
        ("carealarm/v1/devices/dev-1/heartbeat", b'{"msg_id": "m1", "ts": 1, "battery": 101}', "bad_value"),
        (
            "carealarm/v1/devices/dev-1/dose",
            b'{"msg_id": "m1", "ts": 1, "event": "eaten", "dose_id": "d"}',
            "bad_value",
        ),
        ("carealarm/v1/devices/dev-1/status", b"maybe", "bad_value"),
        ("carealarm/v1/devices/dev-1/selfdestruct", b"{}", "unknown_kind"),
        ("carealarm/v1/devices/dev/1/alarm", b"{}", "bad_topic"),
        ("carealarm/v1/devices/+/alarm", b"{}", "bad_topic"),
        ("other/topic", b"{}", "bad_topic"),
        (
            "carealarm/v1/devices/dev-1/alarm",
            b'{"msg_id":"m1","ts":1,"pad":"' + b"x" * MAX_PAYLOAD_BYTES + b'"}',
            "too_large",
        ),
    ],
)
def test_rejections_name_their_reason(topic: str, payload: bytes, reason: str) -> None:
    """Each kind of bad input is refused with its own stable reason code."""
    with pytest.raises(ProtocolError) as info:
        decode(topic, payload)
    assert info.value.reason == reason


def test_alarm_defaults_to_button() -> None:
    """An alarm without alarm_kind is a button press."""
    msg = decode("carealarm/v1/devices/btn-1/alarm", b'{"msg_id":"a1","ts":1700000000000}')
    assert msg == Alarm("btn-1", "a1", 1700000000000, "button")


def test_deeply_nested_json_is_rejected_not_crashing() -> None:
    """A JSON bomb of nesting is refused as bad JSON (no RecursionError escapes)."""
    bomb = b"[" * 3000 + b"]" * 3000
    with pytest.raises(ProtocolError):
        decode("carealarm/v1/devices/btn-1/alarm", bomb[:MAX_PAYLOAD_BYTES])


def test_ack_round_trip() -> None:
    """Application acks encode and decode, with and without a reason."""
    for ack in (Ack("m1", "accepted"), Ack("m2", "rejected", "bad_value"), Ack(None, "rejected", "bad_json")):
        assert decode_ack(encode_ack(ack)) == ack


def test_device_id_from_topic() -> None:
    """Only well-formed device topics yield a device id."""
    assert device_id_from_topic("carealarm/v1/devices/med-7/dose") == "med-7"
    assert device_id_from_topic("carealarm/v1/devices/med-7") is None
    assert device_id_from_topic("carealarm/v2/devices/med-7/dose") is None
