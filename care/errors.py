"""The root of the care domain's exceptions, and the refusal every lifecycle table shares.

The whole hierarchy is drawn in the package docstring (``care/__init__.py``); each error lives next to
the code that raises it and keeps its import path there.
"""

from __future__ import annotations

import enum

__all__ = ["CareError", "IllegalTransition"]


class CareError(Exception):
    """Something the care domain refuses or cannot do; every care exception derives from it."""


class IllegalTransition(CareError, ValueError):
    """The action is not allowed from the current state (of an alert, or another lifecycle's item)."""

    def __init__(self, state: enum.StrEnum, action: enum.StrEnum, thing: str = "an alert") -> None:
        super().__init__(f"cannot {action.value} {thing} that is {state.value}")
        self.state = state
        self.action = action
