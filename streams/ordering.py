"""Merging input partitions into one event-time order before the decision core sees them.

faust interleaves the input topics and partitions however its fetcher delivers them: a worker
catching up on a backlog may read one partition minutes ahead of another, or metrics ahead of
deploys. The core's watermark is the newest event time it has seen, so feeding it in arrival
order would let a fast partition close windows that a slow one still has events for.

``EventTimeMerger`` buffers events and releases them in event-time order, only up to the
*input watermark*: the lowest, over the input partitions that are not idle, of the newest event
time read from each. A partition is idle when it has nothing left to read (caught up with its
high watermark) and nothing arrived from it for ``idle_grace`` seconds: an idle partition does
not hold the others back — the reason a silent topic such as ``deploys`` cannot stall the worker
— while a caught-up partition that a producer is still writing to keeps its place in the order.
Because "caught up" read off a fetch response can be stale — a producer may have appended a
deploy a moment ago — an idle partition lets through only events that arrived before the broker
last *confirmed* (end-offsets look-up) that the partition had nothing unread. A partition whose
position is unknown holds the watermark until it is known or ``unknown_grace`` seconds have
passed.

Limits: a producer that writes an event long after its event time (beyond the allowed lateness)
is late whatever we do; and an event appended to a partition *after* that partition was judged
caught up is ordered by arrival, exactly as the live stream delivers it.

>>> m = EventTimeMerger(idle_grace=2.0)
>>> m.add("p0", 10.0, "a", now=0.0); m.add("p1", 5.0, "b", now=0.0)
>>> m.set_lag("p0", 3); m.set_lag("p1", 0, now=0.5, confirmed=True)
>>> m.release(now=1.0)   # p1 has only reached 5.0 and was heard from 1 s ago
['b']
>>> m.release(now=2.0)   # p1 is caught up and quiet: it no longer holds the watermark
['a']
"""

from __future__ import annotations

import heapq
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["EventTimeMerger"]


@dataclass(slots=True)
class _Source:
    newest: float = float("-inf")
    lag: int | None = None  # unread messages; None = unknown
    unknown_since: float | None = None
    last_arrival: float = float("-inf")
    confirmed_at: float = float("-inf")
    """When a look-up of the broker's end offsets last showed nothing unread."""


@dataclass
class EventTimeMerger:
    """Buffer events from several sources; release them in event-time order (see module doc)."""

    unknown_grace: float = 5.0
    idle_grace: float = 2.0
    _heap: list[tuple[float, int, float, Any]] = field(default_factory=list)
    _sources: dict[Hashable, _Source] = field(default_factory=dict)
    _sequence: int = 0

    def __len__(self) -> int:
        return len(self._heap)

    def add(self, source: Hashable, ts: float, item: Any, now: float = 0.0) -> None:
        """Buffer ``item`` read from ``source`` at wall-clock ``now`` with event time ``ts``."""
        state = self._sources.get(source)
        if state is None:
            state = self._sources[source] = _Source()
        state.last_arrival = now
        if ts > state.newest:
            state.newest = ts
        heapq.heappush(self._heap, (ts, self._sequence, now, item))
        self._sequence += 1

    def set_lag(
        self, source: Hashable, lag: int | None, now: float = 0.0, *, confirmed: bool = False
    ) -> None:
        """Record how many messages ``source`` still has unread (None: unknown).

        ``confirmed`` says the figure comes from asking the broker for its end offsets, a
        question asked at ``now``; lag read off a fetch response may be stale.
        """
        state = self._sources.get(source)
        if state is None:
            state = self._sources[source] = _Source()
        state.lag = lag
        if confirmed and lag == 0:
            state.confirmed_at = max(state.confirmed_at, now)
        if lag is None:
            if state.unknown_since is None:
                state.unknown_since = now
        else:
            state.unknown_since = None

    def forget(self, source: Hashable) -> None:
        """Stop tracking a source (its partition was revoked)."""
        self._sources.pop(source, None)

    def watermark(self, now: float = 0.0) -> float:
        """Events at or before this time can be released without reordering."""
        return self._bounds(now)[0]

    def _bounds(self, now: float) -> tuple[float, float]:
        """(event-time bound from busy sources, arrival-time bound from idle ones)."""
        mark = float("inf")
        horizon = float("inf")
        for state in self._sources.values():
            if state.lag == 0 and now - state.last_arrival >= self.idle_grace:
                # Idle: it bounds nothing in event time, but only what arrived before the
                # broker last confirmed it had nothing more may pass it.
                horizon = min(horizon, state.confirmed_at)
                continue
            if state.lag is None and state.unknown_since is not None and (
                now - state.unknown_since >= self.unknown_grace
            ):
                continue
            mark = min(mark, state.newest)
        return mark, horizon

    def release(self, now: float = 0.0) -> list[Any]:
        """Pop every buffered item up to the watermark, oldest event time first."""
        mark, horizon = self._bounds(now)
        out = []
        heap = self._heap
        while heap and heap[0][0] <= mark and heap[0][2] <= horizon:
            out.append(heapq.heappop(heap)[3])
        return out

    def items(self) -> list[Any]:
        """Every buffered item, in no particular order (checkpoints)."""
        return [entry[3] for entry in self._heap]

    def drain(self) -> list[Any]:
        """Everything buffered, in event-time order (shutdown, tests)."""
        out = [entry[3] for entry in sorted(self._heap)]
        self._heap.clear()
        return out
