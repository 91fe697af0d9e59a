"""The event-time merger: partitions read at different speeds give one event-time order."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from streams.ordering import EventTimeMerger


def test_a_partition_with_unread_messages_holds_the_watermark() -> None:
    merger = EventTimeMerger()
    merger.add("metrics-0", 100.0, "m100")
    merger.set_lag("metrics-0", 10)
    merger.set_lag("deploys-0", 1)  # an unread deploy: nothing may pass until it is read
    assert merger.release() == []
    merger.add("deploys-0", 50.0, "d50")
    merger.set_lag("deploys-0", 0)
    assert merger.release() == ["d50", "m100"]


def test_an_unknown_position_holds_only_for_the_grace_period() -> None:
    merger = EventTimeMerger(unknown_grace=5.0)
    merger.add("a", 10.0, "x")
    merger.set_lag("a", 0)
    merger.set_lag("b", None, now=100.0)
    assert merger.release(now=101.0) == []
    assert merger.release(now=105.0) == ["x"]


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=10_000), st.integers(min_value=2, max_value=5))
def test_any_interleaving_of_sorted_partitions_releases_in_global_order(
    seed: int, partitions: int
) -> None:
    rng = random.Random(seed)
    streams = {p: sorted(rng.uniform(0, 1000) for _ in range(rng.randint(0, 30)))
               for p in range(partitions)}
    cursors = dict.fromkeys(streams, 0)
    merger = EventTimeMerger()
    for p, values in streams.items():
        merger.set_lag(p, len(values))
    released: list[float] = []
    while any(cursors[p] < len(streams[p]) for p in streams):
        p = rng.choice([q for q in streams if cursors[q] < len(streams[q])])
        take = rng.randint(1, 5)  # a fetch returns a few records of one partition
        for _ in range(take):
            if cursors[p] < len(streams[p]):
                value = streams[p][cursors[p]]
                merger.add(p, value, value)
                cursors[p] += 1
        merger.set_lag(p, len(streams[p]) - cursors[p])
        released.extend(merger.release())
    released.extend(merger.release())
    assert released == sorted(v for values in streams.values() for v in values)
    assert len(merger) == 0
