"""The event-time merger: partitions read at different speeds give one event-time order."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from rollguard.streams.ordering import EventTimeMerger


def test_a_partition_with_unread_messages_holds_the_watermark() -> None:
    merger = EventTimeMerger(idle_grace=0.0)
    merger.add("metrics-0", 100.0, "m100")
    merger.set_lag("metrics-0", 10)
    merger.set_lag("deploys-0", 1)  # an unread deploy: nothing may pass until it is read
    assert merger.release() == []
    merger.add("deploys-0", 50.0, "d50")
    merger.set_lag("deploys-0", 0, confirmed=True)
    assert merger.release() == ["d50", "m100"]


def test_an_unknown_position_holds_only_for_the_grace_period() -> None:
    merger = EventTimeMerger(unknown_grace=5.0, idle_grace=0.0)
    merger.add("a", 10.0, "x")
    merger.set_lag("a", 0, now=100.0, confirmed=True)
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
    merger = EventTimeMerger(idle_grace=0.0)
    for p, values in streams.items():
        merger.set_lag(p, len(values), confirmed=True)
    released: list[float] = []
    while any(cursors[p] < len(streams[p]) for p in streams):
        p = rng.choice([q for q in streams if cursors[q] < len(streams[q])])
        take = rng.randint(1, 5)  # a fetch returns a few records of one partition
        for _ in range(take):
            if cursors[p] < len(streams[p]):
                value = streams[p][cursors[p]]
                merger.add(p, value, value)
                cursors[p] += 1
        merger.set_lag(p, len(streams[p]) - cursors[p], confirmed=True)
        released.extend(merger.release())
    released.extend(merger.release())
    assert released == sorted(v for values in streams.values() for v in values)
    assert len(merger) == 0


def test_a_caught_up_partition_that_still_receives_keeps_its_place() -> None:
    merger = EventTimeMerger(idle_grace=2.0)
    merger.add("fast", 50.0, "f50", now=0.0)
    merger.add("slow", 10.0, "s10", now=0.0)
    merger.set_lag("fast", 0, now=3.0, confirmed=True)
    merger.set_lag("slow", 0, now=3.0, confirmed=True)  # caught up, but just heard from
    assert merger.release(now=0.5) == ["s10"]
    merger.add("slow", 20.0, "s20", now=1.0)  # the producer is still writing to it
    assert merger.release(now=1.5) == ["s20"]
    assert merger.release(now=3.5) == ["f50"]  # quiet for 2 s: idle


def test_an_idle_partition_passes_only_what_arrived_before_the_broker_confirmed_it() -> None:
    merger = EventTimeMerger(idle_grace=0.0)
    merger.set_lag("deploys", 0, now=1.0, confirmed=True)
    merger.add("metrics", 70.0, "m70", now=2.0)
    merger.set_lag("metrics", 0, now=2.0, confirmed=True)
    assert merger.release(now=2.5) == []  # deploys was last confirmed before m70 arrived
    merger.set_lag("deploys", 0, now=3.0, confirmed=True)
    assert merger.release(now=3.5) == ["m70"]
