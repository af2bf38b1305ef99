"""Reading ahead in a thread (parity.io.prefetch): the same items in the same order, the
source's errors where the caller would have met them, the source closed in every case,
and no fork while the thread runs."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from parity.io import parallel
from parity.io.prefetch import prefetched


class Source:
    """A generator with a clean-up, recording where things happened."""

    def __init__(self, n: int, fail_at: int | None = None) -> None:
        self.n, self.fail_at = n, fail_at
        self.made: list[int] = []
        self.closed_in: str | None = None

    def __iter__(self) -> Iterator[int]:
        try:
            for i in range(self.n):
                if i == self.fail_at:
                    raise OSError(f"read failed at item {i}")
                self.made.append(i)
                yield i
        finally:
            self.closed_in = threading.current_thread().name


def test_items_come_in_order_from_another_thread() -> None:
    source = Source(50)
    threads = set()

    def made_by() -> Iterator[int]:
        for item in source:
            threads.add(threading.current_thread().name)
            yield item

    assert list(prefetched(made_by())) == list(range(50))
    assert threads == {"parity-prefetch"}
    assert source.closed_in == "parity-prefetch"


def test_an_error_in_the_source_is_raised_after_the_items_before_it() -> None:
    source = Source(10, fail_at=4)
    got = []
    with pytest.raises(OSError, match="read failed at item 4"):
        for item in prefetched(source):
            got.append(item)
    assert got == [0, 1, 2, 3]
    assert source.closed_in == "parity-prefetch"


def test_stopping_early_stops_the_thread_and_closes_the_source() -> None:
    source = Source(1000)
    items = prefetched(source, depth=2)
    assert [next(items) for _ in range(3)] == [0, 1, 2]
    items.close()
    # The thread stopped at most depth + 1 items ahead (waiting in the hand-off, and one
    # made and waiting to be handed), and closed the source.
    assert len(source.made) <= 3 + 2 + 1
    assert source.closed_in == "parity-prefetch"
    assert not any(t.name == "parity-prefetch" for t in threading.enumerate())


def test_the_caller_failing_stops_the_thread() -> None:
    source = Source(1000)
    with pytest.raises(ZeroDivisionError):
        for item in prefetched(source):
            if item == 5:
                raise ZeroDivisionError
    assert source.closed_in == "parity-prefetch"
    # Six items taken, one waiting in the hand-off, one made and waiting to be handed.
    assert len(source.made) <= 6 + 1 + 1


def test_nothing_forks_while_the_thread_runs() -> None:
    big = parallel.MIN_ITEMS_PER_SHARE * 64
    before = parallel.workers(big)
    inside = [parallel.workers(big) for _ in prefetched(range(3))]
    assert inside == [1, 1, 1]
    assert parallel.workers(big) == before


def test_a_slow_source_overlaps_the_callers_work() -> None:
    """Reading and working take turns without prefetching and overlap with it."""

    def slow(n: int) -> Iterator[int]:
        for i in range(n):
            time.sleep(0.05)  # a read outside the GIL
            yield i

    def consume(items: Iterator[int]) -> float:
        began = time.perf_counter()
        for _ in items:
            time.sleep(0.05)  # work outside the GIL (the kernel)
        return time.perf_counter() - began

    alone, overlapped = consume(slow(8)), consume(prefetched(slow(8)))
    assert alone >= 0.8
    assert overlapped < alone * 0.75


def test_depth_is_at_least_one() -> None:
    with pytest.raises(ValueError, match="depth must be at least 1"):
        list(prefetched(range(3), depth=0))
