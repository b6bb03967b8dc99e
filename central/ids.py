"""Ids in the API. Rows: opaque positive integers, bounded so no request can overflow the database's BIGINT
(an id out of range is a 422 with a reason, never a server error). Devices and doses: short names."""

from __future__ import annotations

from typing import Annotated, Final

from fastapi import Path
from pydantic import Field

__all__ = ["DEVICE_ID_PATTERN", "MAX_ID", "BodyId", "PathId"]

# JavaScript's largest safe integer: ids travel through the console's JSON unharmed.
MAX_ID: Final = 2**53 - 1
PathId = Annotated[int, Path(ge=1, le=MAX_ID)]
BodyId = Annotated[int, Field(ge=1, le=MAX_ID)]
# A device id (its MQTT user name) or a dose id: 1-64 of A-Z a-z 0-9 _ . : -
DEVICE_ID_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"
