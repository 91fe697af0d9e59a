"""EventTimeMerger: bulk adds and the live-feed rule (streams/ordering.py)."""

from __future__ import annotations

import heapq
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from rollguard.streams.ordering import EventTimeMerger

WALL = 1_800_000_000.0


def test_caught_up_live_feeds_release_up_to_the_wall_clock() -> None:
    merger = EventTimeMerger(idle_grace=2.0, live_within=2.0)
    merger.add("metrics-0", WALL - 0.1, "closes-the-window", now=10.0)
    merger.add("metrics-1", WALL - 0.9, "older", now=10.0)
    merger.set_lag("metrics-0", 0)
    merger.set_lag("metrics-1", 0)
    # Without the wall clock metrics-1 holds the watermark at its newest event for 2 s.
    assert merger.release(now=10.1) == ["older"]
    assert merger.release(now=10.1) == []
    assert merger.release(now=10.1, wall=WALL) == ["closes-the-window"]


def test_a_backlog_is_not_live() -> None:
    merger = EventTimeMerger(idle_grace=2.0, live_within=2.0)
    merger.add("a", WALL - 3600.0, "a1", now=10.0)
    merger.add("b", WALL - 3500.0, "b1", now=10.0)
    merger.set_lag("a", 0)
    merger.set_lag("b", 0)
    assert merger.release(now=10.1, wall=WALL) == ["a1"]  # a may still get older events
    merger.add("a", WALL - 3550.0, "a2", now=10.5)
    assert merger.release(now=10.6, wall=WALL) == ["a2"]


def test_future_event_times_are_not_live() -> None:
    merger = EventTimeMerger(idle_grace=2.0, live_within=2.0)
    merger.add("a", WALL + 3600.0, "a1", now=10.0)
    merger.add("b", WALL + 3700.0, "b1", now=10.0)
    merger.set_lag("a", 0)
    merger.set_lag("b", 0)
    assert merger.release(now=10.1, wall=WALL) == ["a1"]


def test_an_unread_partition_still_holds_a_live_feed() -> None:
    merger = EventTimeMerger(idle_grace=2.0, live_within=2.0)
    merger.add("metrics", WALL - 0.1, "m", now=10.0)
    merger.set_lag("metrics", 0)
    merger.set_lag("deploys", 1)  # a deploy not read yet: nothing may pass it
    assert merger.release(now=10.1, wall=WALL) == []


def test_an_idle_partition_still_needs_a_confirmation() -> None:
    merger = EventTimeMerger(idle_grace=2.0, live_within=2.0)
    merger.set_lag("deploys", 0, now=1.0, confirmed=True)
    merger.add("metrics", WALL - 0.1, "m", now=10.0)
    merger.set_lag("metrics", 0)
    assert merger.release(now=10.1, wall=WALL) == []  # deploys last confirmed before m arrived
    merger.set_lag("deploys", 0, now=10.2, confirmed=True)
    assert merger.release(now=10.3, wall=WALL) == ["m"]


def test_zero_live_within_disables_the_rule() -> None:
    merger = EventTimeMerger(idle_grace=2.0, live_within=0.0)
    merger.add("a", WALL - 0.1, "a1", now=10.0)
    merger.add("b", WALL - 0.5, "b1", now=10.0)
    merger.set_lag("a", 0)
    merger.set_lag("b", 0)
    assert merger.release(now=10.1, wall=WALL) == ["b1"]


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=0, max_value=100_000))
def test_the_sorted_buffer_releases_what_a_heap_would(seed: int) -> None:
    """Bulk adds and prefix releases give the order of a (ts, arrival sequence) heap."""
    rng = random.Random(seed)
    merger = EventTimeMerger(idle_grace=rng.choice([0.0, 1.0]))
    heap: list[tuple[float, int, float, int]] = []
    now, n = 0.0, 0
    for _ in range(rng.randint(1, 40)):
        now += rng.choice([0.0, 0.5, 1.5])
        source = rng.randrange(3)
        if rng.random() < 0.5:
            times = [float(rng.randint(0, 50)) for _ in range(rng.randint(1, 6))]  # ties
            items = list(range(n, n + len(times)))
            n += len(times)
            for ts, item in zip(times, items, strict=True):
                heapq.heappush(heap, (ts, item, now, item))
            if rng.random() < 0.5:
                merger.add_many(source, times, items, now)
            else:
                for ts, item in zip(times, items, strict=True):
                    merger.add(source, ts, item, now)
        elif rng.random() < 0.6:
            lag = rng.choice([None, 0, 0, 2])
            merger.set_lag(source, lag, now, confirmed=rng.random() < 0.5)
        else:
            mark, horizon = merger._bounds(now)
            expected = []
            while heap and heap[0][0] <= mark and heap[0][2] <= horizon:
                expected.append(heapq.heappop(heap)[3])
            assert merger.release(now) == expected
    assert merger.drain() == [entry[3] for entry in sorted(heap)]
