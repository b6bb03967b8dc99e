"""Commands to devices: one way out, and each one sent is recorded; the device's ``cmdack`` settles it.

Every command (a ``set_schedule`` from the schedule page, a dose ``remind`` from the monitor, a call's
``ring``) goes out the same way: :func:`prepare_command` records and encodes it in the caller's transaction
(its record id is the ``cmd_id`` the device answers with), and :func:`deliver` hands it to the broker after
the commit, so the device's cmdack always finds it, and records ``not_sent`` when the broker did not take
it. :class:`CommandSender` does both for a command that needs no transaction of its own.

The schedule page shows a ``set_schedule`` as "sent, awaiting confirmation" until the dispenser answers;
the monitor calls :func:`apply_command_ack` when a cmdack event arrives. What a record keeps of the
arguments can leave a secret out (a ring's call token): ``recorded_args``.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from protocol.v1 import COMMAND_RESULTS, Command, encode_command
from storage.commands_models import CommandRecord
from storage.db import SessionFactory

__all__ = [
    "NOT_SENT",
    "CommandSender",
    "Outgoing",
    "Publish",
    "deliver",
    "prepare_command",
    "apply_command_ack",
    "command_state",
    "latest_command",
    "mark_not_sent",
    "new_command",
    "next_schedule_version",
]

log = logging.getLogger(__name__)

# Our own result for a command the broker never took: not one of the device's answers.
NOT_SENT = "not_sent"

# (device id, encoded command) -> did the broker take it? The one port every command leaves through.
Publish = Callable[[str, bytes], bool]


@dataclass(frozen=True)
class Outgoing:
    """A recorded, encoded command waiting for its transaction to commit."""

    cmd_id: str
    device_id: str
    payload: bytes


def prepare_command(
    session: Session,
    *,
    device_id: str,
    command: str,
    args: dict[str, Any],
    now_ms: int,
    recorded_args: dict[str, Any] | None = None,
) -> Outgoing:
    """Record a command and encode it (``protocol.v1``; a ``ProtocolError`` is the caller's bug).

    The record keeps ``recorded_args`` when given (the arguments without a secret), else ``args``.
    """
    record = new_command(
        session,
        device_id=device_id,
        command=command,
        args=args if recorded_args is None else recorded_args,
        now_ms=now_ms,
    )
    payload = encode_command(Command(record.id, now_ms, command, tuple(sorted(args.items()))))
    return Outgoing(record.id, device_id, payload)


def deliver(sessions: SessionFactory, publish: Publish | None, outgoing: Outgoing, now_ms: int) -> bool:
    """Hand a committed command to the broker; record ``not_sent`` when it did not take it."""
    sent = False
    if publish is not None:
        try:
            sent = publish(outgoing.device_id, outgoing.payload)
        except Exception:  # a broken connection is a command not sent, never a lost request
            log.exception("commands: %s for %s could not be published", outgoing.cmd_id, outgoing.device_id)
    if not sent:
        log.warning(
            "commands: %s for %s not sent (no broker connection)", outgoing.cmd_id, outgoing.device_id
        )
        with sessions.begin() as session:
            mark_not_sent(session, outgoing.cmd_id, now_ms)
    return sent


class CommandSender:
    """Send one command in a transaction of its own: recorded, committed, published (or marked not sent)."""

    def __init__(
        self, sessions: SessionFactory, publish: Publish | None, clock_ms: Callable[[], int]
    ) -> None:
        self.sessions = sessions
        self.publish = publish
        self._clock_ms = clock_ms

    def send(
        self,
        device_id: str,
        command: str,
        args: dict[str, Any],
        *,
        recorded_args: dict[str, Any] | None = None,
    ) -> bool:
        """Did the broker take it? (When not, it is recorded as ``not_sent``.)"""
        now_ms = self._clock_ms()
        with self.sessions.begin() as session:
            outgoing = prepare_command(
                session,
                device_id=device_id,
                command=command,
                args=args,
                now_ms=now_ms,
                recorded_args=recorded_args,
            )
        return deliver(self.sessions, self.publish, outgoing, self._clock_ms())


def new_command(
    session: Session, *, device_id: str, command: str, args: dict[str, Any], now_ms: int
) -> CommandRecord:
    """Record a command about to be sent; its id is the ``cmd_id`` the device will answer with."""
    record = CommandRecord(
        id=f"{command}-{uuid.uuid4().hex[:16]}",
        device_id=device_id,
        command=command,
        args=json.dumps(args, separators=(",", ":"), sort_keys=True),
        sent_ms=now_ms,
    )
    session.add(record)
    session.flush()
    return record


def apply_command_ack(
    session: Session, device_id: str, cmd_id: str, result: str, at_ms: int
) -> CommandRecord | None:
    """Record a device's answer to a command; None when there is no such command for that device.

    The first answer counts: a repeated cmdack changes nothing. An answer after ``not_sent`` is taken (the
    broker did deliver it after all). The caller commits.
    """
    if result not in COMMAND_RESULTS:
        raise ValueError(f"result must be one of {sorted(COMMAND_RESULTS)}, not {result!r}")
    record = session.get(CommandRecord, cmd_id)
    if record is None or record.device_id != device_id:
        log.warning("commands: cmdack from %s for unknown command %r ignored", device_id, cmd_id)
        return None
    if record.result is None or record.result == NOT_SENT:
        log.info("commands: %s %s -> %s", device_id, cmd_id, result)
        record.result = result
        record.result_ms = at_ms
    return record


def mark_not_sent(session: Session, cmd_id: str, now_ms: int) -> None:
    record = session.get(CommandRecord, cmd_id)
    if record is not None and record.result is None:
        record.result = NOT_SENT
        record.result_ms = now_ms


def latest_command(session: Session, device_id: str, command: str) -> CommandRecord | None:
    return session.scalars(
        select(CommandRecord)
        .where(CommandRecord.device_id == device_id, CommandRecord.command == command)
        .order_by(CommandRecord.sent_ms.desc(), CommandRecord.id.desc())
        .limit(1)
    ).first()


def next_schedule_version(session: Session, device_id: str) -> int:
    """One more than the highest schedule version ever sent to the device (1 for the first)."""
    versions = [
        int(json.loads(args).get("version", 0))
        for args in session.scalars(
            select(CommandRecord.args).where(
                CommandRecord.device_id == device_id, CommandRecord.command == "set_schedule"
            )
        )
    ]
    return max(versions, default=0) + 1


def command_state(record: CommandRecord | None) -> str:
    """awaiting_confirmation | confirmed | failed | refused | not_sent | none."""
    if record is None:
        return "none"
    if record.result is None:
        return "awaiting_confirmation"
    return "confirmed" if record.result == "done" else record.result
