"""``LongMemory``: how rare a window's value is for *this* service, over hours to days.

The per-window detectors remember ~24-120 recent windows, so a burst that a service has every
few hours is a stranger to them. ``LongMemory`` learns every healthy window of one (service,
metric) for days, in bounded memory, and answers one question: what fraction of this service's
healthy windows (at this time of day, once it knows enough of them) were at least this bad?

Storage per (service, metric): for the whole day and for each hour of the day, the count of
windows and the ``top`` largest values seen (a tail sample), in two generations of
``generation`` windows each (the older one is dropped when the newer one is full): so the
memory spans one to two generations and forgets what is older. Above the smallest kept value
the tail count is exact; below it the value is "not rare" (at least ``top`` windows were as
bad). Pure, deterministic, plain-data state; no clock (times come with the values).

Why not ``river.stats.Quantile`` / ``river.sketch.Histogram``: a P² quantile answers "where is
the 99th percentile", not "how rare is x", forgets nothing and needs one object per quantile;
river's histogram keeps ~100-byte bin objects (25 profiles x 2 generations x its bins is
~100 KB per metric). The question here is a tail count, which the largest values answer
exactly, in ~450 floats.

>>> mem = LongMemory(generation=100, top=4)
>>> for i in range(200):
...     mem.learn(100.0 + (i % 10), ts=30.0 * i)
>>> mem.tail(150.0, ts=0.0).p_value < 0.01
True
>>> mem.tail(105.0, ts=0.0).rare
False
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["LongMemory", "Tail"]

_DAY = 86400.0
_HOURS = 24
STATE_VERSION = 1


@dataclass(frozen=True, slots=True)
class Tail:
    """The answer for one value: its tail probability among the service's healthy windows.

    ``p_value`` is (windows at least as bad + 0.5) / (windows + 1); ``scope`` is ``hour`` (the
    hour of day and its two neighbours) or ``day`` (every hour), ``windows`` how many windows
    the answer rests on, and ``rare`` whether ``p_value < alpha`` with enough windows learned.
    """

    p_value: float
    windows: int
    scope: str
    rare: bool


class _TailSample:
    """Count of values and the ``top`` largest of them (sorted ascending)."""

    __slots__ = ("n", "top")

    def __init__(self, n: int = 0, top: list[float] | None = None) -> None:
        self.n = n
        self.top: list[float] = top if top is not None else []

    def add(self, v: float, keep: int) -> None:
        self.n += 1
        top = self.top
        if len(top) < keep:
            bisect.insort(top, v)
        elif v > top[0]:
            del top[0]
            bisect.insort(top, v)

    def at_least(self, v: float) -> tuple[int, bool]:
        """(count of kept values >= v, whether that count is exact)."""
        top = self.top
        count = len(top) - bisect.bisect_left(top, v)
        exact = count < len(top) or len(top) == self.n
        return count, exact


class LongMemory:
    """Tail probability of a window's value among one service's healthy windows (days of them).

    Parameters
    ----------
    generation
        Windows per generation (2,880 = one day of 30-s windows); the memory holds the current
        generation and the previous one.
    top
        Largest values kept per hour of day (per generation); the whole-day sample keeps
        ``4 * top``.
    direction
        ``"up"``: large values are bad (latency, errors); ``"down"``: small values are bad.
    min_windows
        Windows an hour-of-day answer needs before it is used instead of the whole day's.
    alpha
        Tail probability below which a value is ``rare``.
    """

    def __init__(
        self,
        generation: int = 2880,
        top: int = 8,
        direction: str = "up",
        min_windows: int = 240,
        alpha: float = 1e-3,
    ) -> None:
        if direction not in ("up", "down"):
            raise ValueError(f"direction must be 'up' or 'down', not {direction!r}")
        self.generation = generation
        self.top = top
        self.direction = direction
        self.min_windows = min_windows
        self.alpha = alpha
        self._cur = self._fresh()
        self._prev: list[_TailSample] | None = None
        self._n_learned = 0

    def _fresh(self) -> list[_TailSample]:
        return [_TailSample() for _ in range(_HOURS + 1)]  # 24 hours, then the whole day

    @property
    def n_learned(self) -> int:
        """Healthy windows learned so far (not capped)."""
        return self._n_learned

    def _signed(self, v: float) -> float:
        return v if self.direction == "up" else -v

    @staticmethod
    def _hour(ts: float) -> int:
        return int((ts % _DAY) // 3600.0) % _HOURS

    def learn(self, value: float, ts: float) -> None:
        """Learn one healthy window's value; ``ts`` is the window's start (epoch seconds)."""
        if not math.isfinite(value):
            return
        v = self._signed(value)
        if self._cur[_HOURS].n >= self.generation:
            self._prev, self._cur = self._cur, self._fresh()
        self._cur[self._hour(ts)].add(v, self.top)
        self._cur[_HOURS].add(v, 4 * self.top)
        self._n_learned += 1

    def _count(self, idx: list[int], v: float) -> tuple[int, int, bool]:
        n = hits = 0
        exact = True
        for gen in (self._cur, self._prev):
            if gen is None:
                continue
            for i in idx:
                sample = gen[i]
                c, ok = sample.at_least(v)
                n += sample.n
                hits += c
                exact = exact and ok
        return n, hits, exact

    def tail(self, value: float, ts: float) -> Tail:
        """How rare ``value`` is for this service at the time of day of ``ts``.

        The hour of day (pooled with its neighbours) once it holds ``min_windows`` windows,
        else the whole day. A value below the kept tail sample is not rare (its ``p_value`` is
        then a lower bound).
        """
        if not math.isfinite(value):
            return Tail(1.0, 0, "day", False)
        v = self._signed(value)
        h = self._hour(ts)
        hours = [(h - 1) % _HOURS, h, (h + 1) % _HOURS]
        n, hits, exact = self._count(hours, v)
        scope = "hour"
        if n < self.min_windows:
            n, hits, exact = self._count([_HOURS], v)
            scope = "day"
        # Inexact: the whole kept tail was at least as bad, so p is a lower bound (not rare).
        p = (hits + 0.5) / (n + 1.0)
        return Tail(min(1.0, p), n, scope, exact and n >= self.min_windows and p < self.alpha)

    # -- plain-data state ---------------------------------------------------------------------

    def to_state(self) -> dict[str, Any]:
        """JSON-safe plain data; ``from_state`` rebuilds the memory exactly."""

        def gen(g: list[_TailSample] | None) -> list[list[Any]] | None:
            return None if g is None else [[s.n, list(s.top)] for s in g]

        return {
            "kind": "LongMemory",
            "version": STATE_VERSION,
            "params": {
                "generation": self.generation,
                "top": self.top,
                "direction": self.direction,
                "min_windows": self.min_windows,
                "alpha": self.alpha,
            },
            "state": {"n_learned": self._n_learned, "cur": gen(self._cur), "prev": gen(self._prev)},
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> LongMemory:
        """Rebuild from ``to_state`` output (also after a JSON round trip)."""
        if state.get("kind") != "LongMemory" or state.get("version") != STATE_VERSION:
            raise ValueError(f"not a LongMemory state: {state.get('kind')!r}")
        obj = cls(**state["params"])
        s = state["state"]

        def gen(g: list[list[Any]] | None) -> list[_TailSample] | None:
            if g is None:
                return None
            return [_TailSample(int(n), [float(v) for v in top]) for n, top in g]

        cur = gen(s["cur"])
        obj._cur = cur if cur is not None else obj._fresh()
        obj._prev = gen(s["prev"])
        obj._n_learned = int(s["n_learned"])
        return obj
