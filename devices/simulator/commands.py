"""What a simulated device answers to a command from the service (``docs/protocol.md`` §8): a pure table.

:func:`respond` says, for a device kind and a decoded :class:`~protocol.v1.Command`, what the device does:
carry it out (``done``), refuse it (``refused``, with a reason), or leave it alone (``None``: a ``ring``
on a video tablet belongs to the tablet's video endpoint in ``devices/video``, which takes the call).
A dispenser carries out ``remind`` (it shows the reminder) and ``set_schedule`` (it holds the new schedule
and then reports it). Nothing here sends anything: :class:`~devices.simulator.device.SimDevice` publishes
the ``cmdack`` (and the ``schedule`` report) the answer calls for, and remembers it per ``cmd_id`` so a
command delivered twice is answered twice alike and carried out once.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from protocol.v1 import Command, ScheduledDose, is_valid_id

__all__ = ["Response", "Schedule", "readable_cmd_id", "respond"]


@dataclass(frozen=True, slots=True)
class Schedule:
    """The medication schedule a dispenser holds (what its ``schedule`` report says)."""

    version: int
    doses: tuple[ScheduledDose, ...]


@dataclass(frozen=True, slots=True)
class Response:
    """The device's answer to one command: the cmdack's ``result`` and ``reason``, and what it now holds."""

    result: str  # done | failed | refused (protocol.v1.COMMAND_RESULTS)
    reason: str | None = None
    schedule: Schedule | None = None  # set_schedule: the schedule to hold and report


def _remind(_command: Command) -> Response:
    # The dispenser shows the dose's reminder again: nothing can fail in a simulation.
    return Response("done")


def _set_schedule(command: Command) -> Response:
    doses = tuple(ScheduledDose(d["dose_id"], d["at"], d.get("label")) for d in command.arg("doses") or ())
    return Response("done", schedule=Schedule(int(command.arg("version")), doses))


def _set_heartbeat(_command: Command) -> Response:
    # The simulator's heartbeats follow its scenario's timeline; claiming another pace would make the
    # service judge the device by an interval it does not keep.
    return Response("refused", "the simulator keeps the heartbeat pace of its scenario")


def _not_ours(_command: Command) -> None:
    return None


# (device kind, command) -> what the device does; a pair not listed is refused as not supported.
_BY_KIND: Final[dict[tuple[str, str], Callable[[Command], Response | None]]] = {
    ("dispenser", "remind"): _remind,
    ("dispenser", "set_schedule"): _set_schedule,
    ("video", "ring"): _not_ours,
}
# Commands every kind answers the same way.
_ANY_KIND: Final[dict[str, Callable[[Command], Response | None]]] = {
    "set_heartbeat": _set_heartbeat,
}


def respond(device_kind: str, command: Command) -> Response | None:
    """What a simulated device of ``device_kind`` answers to ``command`` (None: not its to answer)."""
    handler = _BY_KIND.get((device_kind, command.command)) or _ANY_KIND.get(command.command)
    if handler is None:
        return Response("refused", f"{command.command} is not supported by a {device_kind} device")
    return handler(command)


def readable_cmd_id(payload: bytes) -> str | None:
    """The ``cmd_id`` of a command that is not valid otherwise, if it can be read (so it can be refused)."""
    try:
        body = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return None
    cmd_id = body.get("cmd_id") if isinstance(body, dict) else None
    return cmd_id if isinstance(cmd_id, str) and is_valid_id(cmd_id) else None
