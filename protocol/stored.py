"""A device event as kept in the ``device_events`` table, and read back as the typed message it was.

The gateway stores every event it accepts (and every live online/offline report) as a row of kind, msg_id,
device time and ``stored_payload`` text; the monitor reads the row back with :func:`decode_stored` into the
same frozen message :func:`protocol.v1.decode` gave the gateway, so what an event means is decided on typed
data, never on a dict. The row's columns name the device, the msg_id and the time: an alarm that came under
a reused msg_id is stored (and read back) under its derived one.
"""

from __future__ import annotations

import json

from .fields import ProtocolError, json_object
from .v1 import EventMessage, Heartbeat, Status, decode_body, event_body

__all__ = ["StoredMessage", "decode_stored", "stored_payload"]

# What a device_events row holds: an event, or a live online/offline report (the monitor sees every change).
StoredMessage = EventMessage | Status


def stored_payload(message: StoredMessage) -> str:
    """The payload column of a message's device_events row (an event's validated JSON body)."""
    if isinstance(message, Status):
        return json.dumps({"online": message.online})
    return json.dumps(event_body(message), separators=(",", ":"))


def decode_stored(kind: str, payload: str, *, device_id: str, msg_id: str, ts: int) -> StoredMessage:
    """Rebuild the typed message of a device_events row; raise ProtocolError when it is not one."""
    body = json_object(payload.encode())
    if kind == "status":
        online = body.get("online")
        if not isinstance(online, bool):
            raise ProtocolError("bad_type", "online must be true or false")
        return Status(device_id, online)
    message = decode_body(kind, device_id, msg_id, ts, body)
    if isinstance(message, Heartbeat):
        raise ProtocolError("unknown_kind", "a heartbeat is not stored as an event")
    return message
