"""Row ids in the API: opaque positive integers, bounded so no request can overflow the database's BIGINT
(an id out of range is a 422 with a reason, never a server error)."""

from __future__ import annotations

from typing import Annotated, Final

from fastapi import Path
from pydantic import Field

__all__ = ["MAX_ID", "BodyId", "PathId"]

# JavaScript's largest safe integer: ids travel through the console's JSON unharmed.
MAX_ID: Final = 2**53 - 1
PathId = Annotated[int, Path(ge=1, le=MAX_ID)]
BodyId = Annotated[int, Field(ge=1, le=MAX_ID)]
