"""The console password policy: long enough, not common or breached, not the user name (pure, offline).

The list of common passwords is ``static/common-passwords.txt.gz``: the 20,000 most common passwords of
breached-password corpora, compiled by Royce Williams and shipped with Django
(``django/contrib/auth/common-passwords.txt.gz``, BSD-3-Clause, Django Software Foundation). It is kept in
the repository so the check needs no network; it is read once, at the first check.
"""

from __future__ import annotations

import functools
import gzip
from pathlib import Path
from typing import Final

__all__ = ["MIN_LENGTH", "password_problem"]

MIN_LENGTH: Final = 10
MAX_LENGTH: Final = 256
_COMMON = Path(__file__).parent / "static" / "common-passwords.txt.gz"
# Fewer distinct characters than this is a pattern, not a password ("aaaaaaaaaa", "abababab12").
_MIN_DISTINCT: Final = 4


@functools.cache
def _common() -> frozenset[str]:
    with gzip.open(_COMMON, "rt", encoding="utf-8") as fh:
        return frozenset(line.strip().lower() for line in fh if line.strip())


def password_problem(password: str, *, username: str) -> str | None:
    """Why ``password`` is refused for ``username``, or None when it is acceptable."""
    if len(password) < MIN_LENGTH:
        return f"a password needs at least {MIN_LENGTH} characters"
    if len(password) > MAX_LENGTH:
        return f"a password has at most {MAX_LENGTH} characters"
    lowered = password.lower()
    name = username.strip().lower()
    if name and (lowered == name or (len(name) >= 3 and name in lowered)):
        return "a password must not contain the user name"
    if len(set(lowered)) < _MIN_DISTINCT:
        return "a password must not repeat a few characters over and over"
    if lowered in _common():
        return "this password is one of the most common (breached) passwords; choose another"
    return None
