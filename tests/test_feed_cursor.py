"""The change-feed cursor delivers every committed change once, whatever order commits become visible in."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from central.feed import ChangeCursor


def test_in_order_delivery() -> None:
    """Consecutive seqs are delivered and the low-water mark follows them."""
    cursor = ChangeCursor(0)
    assert cursor.accept([1, 2, 3], now_ms=0) == [1, 2, 3]
    assert cursor.low == 3
    assert cursor.accept([], now_ms=10) == []


def test_late_commit_is_delivered_once() -> None:
    """Seq 2 committing after seq 3 is still delivered, and 3 is not delivered twice."""
    cursor = ChangeCursor(0)
    assert cursor.accept([1, 3], now_ms=0) == [1, 3]
    assert cursor.low == 1  # 2 is a hole: keep reading from 1
    assert cursor.accept([3], now_ms=100) == []
    assert cursor.accept([2, 3], now_ms=200) == [2]
    assert cursor.low == 3


def test_hole_that_never_fills_is_given_up_after_timeout() -> None:
    """A rolled-back transaction's seq is skipped once the gap timeout passes."""
    cursor = ChangeCursor(0, gap_timeout_ms=1000)
    cursor.accept([1, 3], now_ms=0)
    cursor.accept([3], now_ms=999)
    assert cursor.low == 1
    cursor.accept([3], now_ms=1000)
    assert cursor.low == 3


@given(st.permutations(list(range(1, 30))), st.integers(1, 29))
def test_any_commit_order_delivers_each_exactly_once(order: list[int], step: int) -> None:
    """Rows becoming visible in any order, read in any batch size, are each delivered exactly once."""
    cursor = ChangeCursor(0, gap_timeout_ms=10**9)
    visible: set[int] = set()
    delivered: list[int] = []
    for i in range(0, len(order), step):
        visible.update(order[i : i + step])
        delivered += cursor.accept([s for s in visible if s > cursor.low], now_ms=i)
    delivered += cursor.accept([s for s in visible if s > cursor.low], now_ms=10**6)
    assert sorted(delivered) == list(range(1, 30))
    assert cursor.low == 29
