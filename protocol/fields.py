"""Field validators of protocol v1's JSON payloads: each returns the value or raises ProtocolError.

Exceptions::

    ProtocolError            every rejection; ``.reason`` is a short stable code for metrics and nacks
"""

from __future__ import annotations

import json
import re
from typing import Any, Final

__all__ = [
    "ID_RE",
    "ProtocolError",
    "choice",
    "json_object",
    "opt_int",
    "opt_str",
    "req_id",
    "req_int",
    "req_str",
]

# Device ids and message ids are used in topics and database keys: a safe, bounded alphabet.
ID_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")


class ProtocolError(ValueError):
    """A device message that is not valid protocol v1; ``reason`` is a stable code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def json_object(payload: bytes) -> dict[str, Any]:
    try:
        body = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ProtocolError("bad_json", f"payload is not UTF-8 JSON ({type(exc).__name__})") from None
    if not isinstance(body, dict):
        raise ProtocolError("bad_json", "payload must be a JSON object")
    return body


def req_id(body: dict[str, Any], key: str) -> str:
    value = body.get(key)
    if value is None:
        raise ProtocolError("missing_field", f"{key} is required")
    if not isinstance(value, str):
        raise ProtocolError("bad_type", f"{key} must be a string")
    if not ID_RE.fullmatch(value):
        raise ProtocolError("bad_value", f"{key} must be 1-64 characters of A-Z a-z 0-9 _ . : -")
    return value


def req_int(body: dict[str, Any], key: str, low: int, high: int) -> int:
    value = body.get(key)
    if value is None:
        raise ProtocolError("missing_field", f"{key} is required")
    return _check_int(key, value, low, high)


def opt_int(body: dict[str, Any], key: str, low: int, high: int) -> int | None:
    value = body.get(key)
    return None if value is None else _check_int(key, value, low, high)


def _check_int(key: str, value: object, low: int, high: int) -> int:
    # bool is an int subclass in Python; true/false is never a number on the wire.
    if isinstance(value, bool) or not isinstance(value, int):
        raise ProtocolError("bad_type", f"{key} must be an integer")
    if not low <= value <= high:
        raise ProtocolError("bad_value", f"{key} must be between {low} and {high}")
    return value


def choice(body: dict[str, Any], key: str, allowed: frozenset[str], default: str | None = None) -> str:
    value = opt_str(body, key, 32)
    if value is None:
        if default is None:
            raise ProtocolError("missing_field", f"{key} is required")
        return default
    if value not in allowed:
        raise ProtocolError("bad_value", f"{key} must be one of {sorted(allowed)}")
    return value


def req_str(body: dict[str, Any], key: str, max_len: int) -> str:
    value = opt_str(body, key, max_len)
    if value is None:
        raise ProtocolError("missing_field", f"{key} is required")
    return value


def opt_str(body: dict[str, Any], key: str, max_len: int) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ProtocolError("bad_type", f"{key} must be a string")
    if not 0 < len(value) <= max_len:
        raise ProtocolError("bad_value", f"{key} must be 1-{max_len} characters")
    return value
