"""Every command leaves one way (care.commands): recorded before it is published, its record id is the
``cmd_id`` the device answers with, and a command the broker did not take is recorded as ``not_sent`` —
on SQLite and PostgreSQL. The monitor's dose reminders go out this way too."""

from __future__ import annotations

import json

from care.commands import NOT_SENT, CommandSender, apply_command_ack, command_state
from protocol.v1 import decode_command
from storage.commands_models import CommandRecord
from storage.db import SessionFactory
from storage.registry import add_client, add_device

NOW = 1_800_000_000_000


def _dispenser(sessions: SessionFactory) -> str:
    with sessions.begin() as s:
        client = add_client(s, name="Mevr. Jansen", now_ms=NOW)
        add_device(s, device_id="med-1", client_id=client.id, kind="dispenser", now_ms=NOW)
    return "med-1"


def test_a_command_is_recorded_before_it_is_published_and_its_ack_settles_it(
    sessions: SessionFactory,
) -> None:
    device = _dispenser(sessions)
    seen: list[tuple[str, str | None]] = []

    def publish(device_id: str, payload: bytes) -> bool:
        command = decode_command(payload)
        with sessions() as s:  # committed before the broker gets it: the cmdack will find it
            row = s.get(CommandRecord, command.cmd_id)
            seen.append((device_id, row.command if row else None))
        return True

    sender = CommandSender(sessions, publish, lambda: NOW)
    assert sender.send(device, "remind", {"dose_id": "morning"}) is True
    assert seen == [("med-1", "remind")]
    with sessions.begin() as s:
        row = s.query(CommandRecord).one()
        assert (
            json.loads(row.args) == {"dose_id": "morning"} and command_state(row) == "awaiting_confirmation"
        )
        apply_command_ack(s, device, row.id, "done", NOW + 1_000)
    with sessions() as s:
        assert command_state(s.query(CommandRecord).one()) == "confirmed"


def test_a_command_the_broker_did_not_take_is_recorded_as_not_sent(sessions: SessionFactory) -> None:
    device = _dispenser(sessions)

    def broken(_device: str, _payload: bytes) -> bool:
        raise OSError("connection lost")

    assert (
        CommandSender(sessions, lambda _d, _p: False, lambda: NOW).send(device, "remind", {"dose_id": "a"})
        is False
    )
    assert CommandSender(sessions, broken, lambda: NOW).send(device, "remind", {"dose_id": "b"}) is False
    assert CommandSender(sessions, None, lambda: NOW).send(device, "remind", {"dose_id": "c"}) is False
    with sessions() as s:
        assert [row.result for row in s.query(CommandRecord)] == [NOT_SENT] * 3


def test_a_secret_argument_is_sent_but_not_recorded(sessions: SessionFactory) -> None:
    device = _dispenser(sessions)
    sent: list[bytes] = []
    sender = CommandSender(sessions, lambda _d, p: sent.append(p) is None, lambda: NOW)
    args = {"call_id": "c1", "caller": "Nurse", "token": "s3cret"}
    assert sender.send(device, "ring", args, recorded_args={"call_id": "c1", "caller": "Nurse"})
    assert dict(decode_command(sent[0]).args)["token"] == "s3cret"
    with sessions() as s:
        assert "s3cret" not in s.query(CommandRecord).one().args
