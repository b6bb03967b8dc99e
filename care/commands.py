"""Commands to devices: each one sent is recorded, and the device's ``cmdack`` settles it.

The schedule page shows a ``set_schedule`` as "sent, awaiting confirmation" until the dispenser answers;
the monitor calls :func:`apply_command_ack` when a cmdack event arrives.
"""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from protocol.v1 import COMMAND_RESULTS
from storage.commands_models import CommandRecord

__all__ = [
    "NOT_SENT",
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
