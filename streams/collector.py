"""Python's garbage collector while a decision core runs (the worker's lead, replay).

The engine state of a fleet is a few hundred thousand long-lived objects (each service keeps
~25 closed windows, its rolling baselines and long memories), and every window close adds a
handful that live for the next ~25 windows. With Python's default first-generation threshold
(700 allocations) the collector runs a young pass every few events, and every ~40,000 events
a full pass over the whole state, which is bound by memory latency, not by work: in the
worker that took a third of the time (docs/performance.md), in replay 12-13 % (bench/
replay_throughput.py), and what it finds is next to nothing (a few hundred objects per
million events there: the core's garbage is freed by reference counting). Raising the threshold
while the core runs keeps the passes to a few per million events; it is put back afterwards,
so a library caller's own setting is not changed for good.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["GC_THRESHOLD", "collector_for_state"]

GC_THRESHOLD = 200_000
"""The collector's first-generation threshold while a core runs (Python's default is 700)."""


@contextmanager
def collector_for_state(threshold: int = GC_THRESHOLD) -> Iterator[None]:
    """Run the block with the first-generation threshold at ``threshold`` (the older
    generations' thresholds as they were), and restore the previous thresholds after."""
    saved = gc.get_threshold()
    gc.set_threshold(threshold, *saved[1:])
    try:
        yield
    finally:
        gc.set_threshold(*saved)
