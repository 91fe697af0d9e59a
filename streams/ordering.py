"""Merging input partitions into one event-time order before the decision core sees them.

faust interleaves the input topics and partitions however its fetcher delivers them: a worker
catching up on a backlog may read one partition minutes ahead of another, or metrics ahead of
deploys. The core's watermark is the newest event time it has seen, so feeding it in arrival
order would let a fast partition close windows that a slow one still has events for.

``EventTimeMerger`` buffers events and releases them in event-time order, only up to the
*input watermark*: the lowest, over every input partition that still has unread messages, of
the newest event time read from it. A partition with nothing left to read (caught up with its
high watermark) does not hold the others back — that is the idleness rule, and the reason a
silent topic such as ``deploys`` cannot stall the worker. A partition whose position is unknown
holds the watermark until it is known or ``unknown_grace`` seconds have passed.

Limits: a producer that writes an event long after its event time (beyond the allowed lateness)
is late whatever we do; and an event appended to a partition *after* that partition was judged
caught up is ordered by arrival, exactly as the live stream delivers it.

>>> m = EventTimeMerger()
>>> m.add("p0", 10.0, "a"); m.add("p1", 5.0, "b")
>>> m.set_lag("p0", 3); m.set_lag("p1", 3)
>>> m.release()          # p1 has only reached 5.0: only events up to 5.0 may go
['b']
>>> m.set_lag("p1", 0)   # p1 is caught up: it no longer holds the watermark
>>> m.release()
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


@dataclass
class EventTimeMerger:
    """Buffer events from several sources; release them in event-time order (see module doc)."""

    unknown_grace: float = 5.0
    _heap: list[tuple[float, int, Any]] = field(default_factory=list)
    _sources: dict[Hashable, _Source] = field(default_factory=dict)
    _sequence: int = 0

    def __len__(self) -> int:
        return len(self._heap)

    def add(self, source: Hashable, ts: float, item: Any) -> None:
        """Buffer ``item`` read from ``source`` with event time ``ts``."""
        state = self._sources.get(source)
        if state is None:
            state = self._sources[source] = _Source()
        if ts > state.newest:
            state.newest = ts
        heapq.heappush(self._heap, (ts, self._sequence, item))
        self._sequence += 1

    def set_lag(self, source: Hashable, lag: int | None, now: float = 0.0) -> None:
        """Record how many messages ``source`` still has unread (None: unknown)."""
        state = self._sources.get(source)
        if state is None:
            state = self._sources[source] = _Source()
        state.lag = lag
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
        mark = float("inf")
        for state in self._sources.values():
            if state.lag == 0:
                continue
            if state.lag is None and state.unknown_since is not None and (
                now - state.unknown_since >= self.unknown_grace
            ):
                continue
            mark = min(mark, state.newest)
        return mark

    def release(self, now: float = 0.0) -> list[Any]:
        """Pop every buffered item up to the watermark, oldest event time first."""
        mark = self.watermark(now)
        out = []
        heap = self._heap
        while heap and heap[0][0] <= mark:
            out.append(heapq.heappop(heap)[2])
        return out

    def drain(self) -> list[Any]:
        """Everything buffered, in event-time order (shutdown, tests)."""
        out = [item for _, _, item in sorted(self._heap)]
        self._heap.clear()
        return out
