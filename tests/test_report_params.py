"""Report windows: every malformed ``since``/``until`` is a 422 with a clear message, never a 500."""

from __future__ import annotations

import pytest
from access_world import World, world  # noqa: F401

BAD = {
    "superscript two": ("since", "²", "since"),
    "the last day of year 9999": ("until", "9999-12-31", "until"),
    "a 4,300-digit number": ("since", "9" * 4300, "at most"),
    "twenty nines": ("until", "99999999999999999999", "between"),
    "a year past 3000 as ms": ("until", "40000000000000", "between"),
}


@pytest.mark.parametrize("case", BAD, ids=list(BAD))
def test_a_bad_window_value_is_422_with_a_reason(world: World, case: str) -> None:  # noqa: F811
    """The value from schemathesis's crashes answers 422 naming what is wrong, on every report."""
    name, value, words = BAD[case]
    api = world.as_("sup")
    for report in ("answer-times", "adherence", "uptime"):
        answer = api.get(f"/api/reports/{report}", params={name: value})
        assert answer.status_code == 422, (report, answer.status_code, answer.text[:200])
        assert words in answer.json()["detail"]


def test_a_good_window_still_works(world: World) -> None:  # noqa: F811
    """Dates, ISO date-times and epoch ms within range are still accepted."""
    api = world.as_("sup")
    for since, until in (("2026-01-01", "2026-01-31"), ("1700000000000", "1700086400000")):
        assert api.get("/api/reports/uptime", params={"since": since, "until": until}).status_code == 200
