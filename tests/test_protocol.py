"""The protocol v1 codec: round trips, every rejection reason, and fuzzing with hypothesis."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.stored import StoredMessage, decode_stored, stored_payload
from protocol.v1 import (
    ALARM_KINDS,
    COMMAND_RESULTS,
    DISPENSER_EVENTS,
    DOSE_EVENTS,
    FAULTS,
    MAX_PAYLOAD_BYTES,
    Ack,
    Alarm,
    AlarmCancel,
    Command,
    CommandAck,
    DispenserEvent,
    DoseEvent,
    Fault,
    Heartbeat,
    ProtocolError,
    ScheduledDose,
    ScheduleReport,
    Status,
    decode,
    decode_ack,
    decode_command,
    device_id_from_topic,
    encode,
    encode_ack,
    encode_command,
)

hhmm = st.builds(lambda h, m: f"{h:02d}:{m:02d}", st.integers(0, 23), st.integers(0, 59))
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
    st.builds(AlarmCancel, ids, ids, ts, ids),
    st.builds(
        DispenserEvent,
        ids,
        ids,
        ts,
        st.sampled_from(sorted(DISPENSER_EVENTS - {"stock_low"})),
        st.none() | st.integers(0, 10_000),
        st.none() | st.text(min_size=1, max_size=200),
    ),
    st.builds(DispenserEvent, ids, ids, ts, st.just("stock_low"), st.integers(0, 10_000)),
    st.builds(
        ScheduleReport,
        ids,
        ids,
        ts,
        st.integers(0, 2**31),
        st.lists(
            st.builds(ScheduledDose, ids, hhmm, st.none() | st.text(min_size=1, max_size=100)), max_size=24
        ).map(tuple),
    ),
    st.builds(
        Fault, ids, ids, ts, st.sampled_from(sorted(FAULTS)), st.none() | st.text(min_size=1, max_size=200)
    ),
    st.builds(
        CommandAck,
        ids,
        ids,
        ts,
        ids,
        st.sampled_from(sorted(COMMAND_RESULTS)),
        st.none() | st.text(min_size=1, max_size=200),
    ),
)
commands = st.one_of(
    st.builds(lambda c, t, d: Command(c, t, "remind", (("dose_id", d),)), ids, ts, ids),
    st.builds(
        lambda c, t, i: Command(c, t, "set_heartbeat", (("interval_s", i),)), ids, ts, st.integers(5, 86_400)
    ),
    st.builds(
        lambda c, t, call, who: Command(c, t, "ring", (("call_id", call), ("caller", who))),
        ids,
        ts,
        ids,
        st.text(min_size=1, max_size=100),
    ),
    st.builds(
        lambda c, t, v, at: Command(
            c,
            t,
            "set_schedule",
            (("doses", [{"at": a, "dose_id": f"d{i}"} for i, a in enumerate(at)]), ("version", v)),
        ),
        ids,
        ts,
        st.integers(0, 2**31),
        st.lists(hhmm, max_size=24),
    ),
)


@given(messages)
def test_round_trip(message: object) -> None:
    """Every valid message survives encode then decode unchanged."""
    topic, payload = encode(message)  # type: ignore[arg-type]
    assert decode(topic, payload) == message


@given(messages.filter(lambda m: not isinstance(m, Heartbeat)))
def test_stored_round_trip(message: StoredMessage) -> None:
    """Every event (and live status) the gateway stores reads back from its row as the message it was."""
    envelope = ("~status", 0) if isinstance(message, Status) else (message.msg_id, message.ts)
    stored = decode_stored(
        message.kind, stored_payload(message), device_id=message.device_id, msg_id=envelope[0], ts=envelope[1]
    )
    assert stored == message


def test_a_stored_row_that_is_no_message_is_refused() -> None:
    """A row no gateway could have written (a heartbeat, a status without online) raises ProtocolError."""
    with pytest.raises(ProtocolError, match="unknown_kind"):
        decode_stored("heartbeat", "{}", device_id="d", msg_id="m", ts=0)
    with pytest.raises(ProtocolError, match="bad_type"):
        decode_stored("status", '{"online": "yes"}', device_id="d", msg_id="m", ts=0)


@given(commands)
def test_command_round_trip(command: Command) -> None:
    """Every valid command survives encode_command then decode_command unchanged."""
    assert decode_command(encode_command(command)) == command


@given(st.binary(max_size=400))
def test_any_bytes_as_command_parse_or_reject(payload: bytes) -> None:
    """A device parsing any bytes as a command gets a Command or a ProtocolError, nothing else."""
    try:
        decode_command(payload)
    except ProtocolError as exc:
        assert exc.reason


@pytest.mark.parametrize(
    ("kind", "body", "expected"),
    [
        ("alarm", {"msg_id": "c1", "ts": 5, "cancels": "a1"}, AlarmCancel("d-1", "c1", 5, "a1")),
        (
            "dispenser",
            {"msg_id": "s1", "ts": 5, "event": "stock_low", "doses_left": 6},
            DispenserEvent("d-1", "s1", 5, "stock_low", 6),
        ),
        ("fault", {"msg_id": "f1", "ts": 5, "fault": "power_lost"}, Fault("d-1", "f1", 5, "power_lost")),
        (
            "cmdack",
            {"msg_id": "k1", "ts": 5, "cmd_id": "cmd-9", "result": "done"},
            CommandAck("d-1", "k1", 5, "cmd-9", "done"),
        ),
        (
            "schedule",
            {"msg_id": "p1", "ts": 5, "version": 3, "doses": [{"dose_id": "morning", "at": "08:00"}]},
            ScheduleReport("d-1", "p1", 5, 3, (ScheduledDose("morning", "08:00"),)),
        ),
    ],
)
def test_every_message_kind_decodes(kind: str, body: dict[str, object], expected: object) -> None:
    """Each message kind of protocol v1 decodes from its documented JSON."""
    assert decode(f"carealarm/v1/devices/d-1/{kind}", json.dumps(body).encode()) == expected


def test_stock_low_needs_doses_left() -> None:
    """A stock_low report without the number of doses left is refused."""
    with pytest.raises(ProtocolError, match="doses_left"):
        decode("carealarm/v1/devices/d-1/dispenser", b'{"msg_id":"s","ts":1,"event":"stock_low"}')


def test_schedule_times_are_checked() -> None:
    """A schedule time that is not HH:MM is refused."""
    with pytest.raises(ProtocolError, match="HH:MM"):
        decode(
            "carealarm/v1/devices/d-1/schedule",
            b'{"msg_id":"s","ts":1,"version":1,"doses":[{"dose_id":"x","at":"25:00"}]}',
        )


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
