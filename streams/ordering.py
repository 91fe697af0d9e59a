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

Live inputs. A caught-up partition that is still being written to holds the watermark at its
newest event time for ``idle_grace`` seconds, which is what keeps a backlog that a producer is
still publishing in order. On a *live* feed — event times that follow the wall clock — that
wait is pure latency: with sparse telemetry the event that closes a window would wait for every
recently active partition to deliver something newer. So when the caller passes the wall clock
(``release(now, wall)``), a caught-up partition whose newest event time is within
``live_within`` seconds of it bounds the watermark at the wall clock instead: it is assumed not
to deliver events older than *now* any more. A live producer that breaks that assumption reorders
its events by at most its own delay plus ``live_within``, which the core's allowed lateness
absorbs (reordering within the lateness never changes a decision). A backlog with past (or
future) event times is never live, so it keeps the strict order. Idle partitions still need the
broker's confirmation described above.

Limits: a producer that writes an event long after its event time (beyond the allowed lateness)
is late whatever we do; and an event appended to a partition *after* that partition was judged
caught up is ordered by arrival, exactly as the live stream delivers it.

The buffer is a list kept sorted by event time (a stable sort, so ties keep their arrival order):
a fetched batch is appended in one call (``add_many``) and each release takes a whole sorted
prefix at once, instead of a heap push and pop per event.

>>> m = EventTimeMerger(idle_grace=2.0)
>>> m.add("p0", 10.0, "a", now=0.0); m.add("p1", 5.0, "b", now=0.0)
>>> m.set_lag("p0", 3); m.set_lag("p1", 0, now=0.5, confirmed=True)
>>> m.release(now=1.0)   # p1 has only reached 5.0 and was heard from 1 s ago
['b']
>>> m.release(now=2.0)   # p1 is caught up and quiet: it no longer holds the watermark
['a']
>>> live = EventTimeMerger(idle_grace=2.0, live_within=2.0)
>>> live.add("p0", 1000.2, "x", now=0.0); live.add("p1", 999.5, "y", now=0.0)
>>> live.set_lag("p0", 0); live.set_lag("p1", 0)
>>> live.release(now=0.1)              # no wall clock given: p1 holds the watermark at 999.5
['y']
>>> live.release(now=0.1, wall=1000.3)  # both feeds are live: up to the wall clock
['x']
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Hashable
from dataclasses import dataclass, field
from itertools import repeat
from operator import itemgetter
from typing import Any

__all__ = ["EventTimeMerger", "IdleClock"]

_TS = itemgetter(0)
_ITEM = itemgetter(2)


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
    live_within: float = 2.0
    _buffer: list[tuple[float, float, Any]] = field(default_factory=list)
    """(event time, arrival, item); sorted by event time, ties in arrival order, if _sorted."""
    _sorted: bool = True
    _newest_arrival: float = float("-inf")
    """Latest arrival of anything buffered (an upper bound)."""
    _sources: dict[Hashable, _Source] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self._buffer)

    def _source(self, source: Hashable) -> _Source:
        state = self._sources.get(source)
        if state is None:
            state = self._sources[source] = _Source()
        return state

    def add(self, source: Hashable, ts: float, item: Any, now: float = 0.0) -> None:
        """Buffer ``item`` read from ``source`` at wall-clock ``now`` with event time ``ts``."""
        self.add_many(source, [ts], [item], now)

    def add_many(self, source: Hashable, times: list[float], items: list[Any],
                 now: float = 0.0) -> None:
        """Buffer ``items`` (event times ``times``), read from ``source`` together at ``now``."""
        if not items:
            return
        state = self._source(source)
        state.last_arrival = now
        newest = max(times)
        if newest > state.newest:
            state.newest = newest
        buffer = self._buffer
        if len(items) > 1 or (buffer and times[0] < buffer[-1][0]):
            self._sorted = False  # release sorts; timsort is linear on the sorted runs it gets
        buffer.extend(zip(times, repeat(now), items, strict=False))
        if now > self._newest_arrival:
            self._newest_arrival = now

    def set_lag(
        self, source: Hashable, lag: int | None, now: float = 0.0, *, confirmed: bool = False
    ) -> None:
        """Record how many messages ``source`` still has unread (None: unknown).

        ``confirmed`` says the figure comes from asking the broker for its end offsets, a
        question asked at ``now``; lag read off a fetch response may be stale.
        """
        state = self._source(source)
        state.lag = lag
        if confirmed and lag == 0:
            state.confirmed_at = max(state.confirmed_at, now)
        if lag is None:
            if state.unknown_since is None:
                state.unknown_since = now
        else:
            state.unknown_since = None

    def lag(self, source: Hashable) -> int | None:
        """The unread messages last recorded for ``source`` (None: unknown)."""
        state = self._sources.get(source)
        return None if state is None else state.lag

    def watermark(self, now: float = 0.0, wall: float | None = None) -> float:
        """Events at or before this time can be released without reordering."""
        return self._bounds(now, wall)[0]

    def _bounds(self, now: float, wall: float | None = None) -> tuple[float, float]:
        """(event-time bound from busy sources, arrival-time bound from idle ones)."""
        mark = float("inf")
        horizon = float("inf")
        for state in self._sources.values():
            if state.lag == 0:
                if now - state.last_arrival >= self.idle_grace:
                    # Idle: it bounds nothing in event time, but only what arrived before the
                    # broker last confirmed it had nothing more may pass it.
                    horizon = min(horizon, state.confirmed_at)
                    continue
                if wall is not None and state.newest >= wall - self.live_within:
                    # A live feed, caught up: nothing older than the wall clock is expected.
                    mark = min(mark, max(state.newest, wall))
                    continue
            elif state.lag is None and state.unknown_since is not None and (
                now - state.unknown_since >= self.unknown_grace
            ):
                continue
            mark = min(mark, state.newest)
        return mark, horizon

    def release(self, now: float = 0.0, wall: float | None = None) -> list[Any]:
        """Take every buffered item up to the watermark, oldest event time first.

        ``wall`` is the wall clock (epoch seconds) for the live-feed rule (module doc); without
        it a caught-up partition holds the watermark for ``idle_grace`` seconds.
        """
        buffer = self._buffer
        if not buffer:
            return []
        mark, horizon = self._bounds(now, wall)
        if not self._sorted:
            buffer.sort(key=_TS)  # stable: equal event times keep their arrival order
            self._sorted = True
        cut = len(buffer) if buffer[-1][0] <= mark else bisect_right(buffer, mark, key=_TS)
        if cut and self._newest_arrival > horizon:
            # Stop before the first item that arrived after an idle source's last confirmation.
            for i in range(cut):
                if buffer[i][1] > horizon:
                    cut = i
                    break
        if not cut:
            return []
        out = list(map(_ITEM, buffer[:cut]))
        del buffer[:cut]
        if not buffer:
            self._newest_arrival = float("-inf")
        return out

    def items(self) -> list[Any]:
        """Every buffered item, in no particular order (checkpoints)."""
        return list(map(_ITEM, self._buffer))

    def drain(self) -> list[Any]:
        """Everything buffered, in event-time order (shutdown, tests)."""
        buffer = self._buffer
        if not self._sorted:
            buffer.sort(key=_TS)
        out = list(map(_ITEM, buffer))
        buffer.clear()
        self._sorted = True
        self._newest_arrival = float("-inf")
        return out


class IdleClock:
    """Lets event time pass while every input is caught up and quiet.

    After ``idle_seconds`` without a message, the watermark moves to the newest event time
    seen (what replay does at the end of its input). If the input is live (its newest event
    time is about as far behind the wall clock as the quiet period), event time then follows the
    wall clock, so that a silent service's bake still ends and stale telemetry is still noticed
    when nothing at all arrives; a historical backlog stops at its newest event time.
    ``idle_seconds <= 0`` disables it.
    """

    def __init__(self, idle_seconds: float) -> None:
        self.idle_seconds = idle_seconds
        self.newest_event = float("-inf")
        self.last_arrival: float | None = None

    def seen(self, ts: float) -> None:
        if ts > self.newest_event:
            self.newest_event = ts

    def arrived(self, now: float) -> None:
        self.last_arrival = now

    def idle_target(self, now: float, wall_now: float) -> float | None:
        if self.idle_seconds <= 0 or self.last_arrival is None:
            return None
        quiet = now - self.last_arrival
        if quiet < self.idle_seconds or self.newest_event == float("-inf"):
            return None
        behind = wall_now - self.newest_event
        if behind > quiet + self.idle_seconds + 60:
            # Historical input (a backlog replayed): event time does not follow the wall clock.
            return self.newest_event
        return self.newest_event + (quiet - self.idle_seconds)
