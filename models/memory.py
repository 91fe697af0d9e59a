"""``LongMemory``: how rare a window's value is for *this* service, over hours to days.

The per-window detectors remember ~24-120 recent windows, so a burst that a service has every
few hours is a stranger to them. ``LongMemory`` learns every healthy window of one (service,
metric) for days, in bounded memory, and answers one question: what fraction of this service's
healthy windows were at least this bad, once its time-of-day level is taken into account?

- **Time of day**: a level per hour of day (a running mean over the last ~``hour_span``
  windows of that hour). Once an hour has ``min_windows`` windows, a value is rescaled by
  ``day level / hour level`` before it is judged, so a value normal for the night is rare at
  noon and the reverse. A series without a daily profile has equal hour levels: a no-op.
- **Tail**: the number of (rescaled) windows learned and the ``top`` largest of them, in two
  generations of ``generation`` windows (the older is dropped when the newer is full): the
  memory spans one to two generations. Above the smallest kept value the tail count is exact;
  below it a value is not rare (at least ``top`` windows per generation were as bad).

So a service's routine burst (2-3x every few hours) is in its own tail: ``routine`` once it
has been seen ``routine_windows`` times, never ``rare``, while a departure it has not shown in
a day or two is ``rare``. Pure, deterministic, plain-data state of
~120 numbers; no clock (times come with the values).

Why not ``river.stats.Quantile`` / ``river.sketch.Histogram``: a P² quantile answers "where is
the 99.9th percentile", not "how rare is x", forgets nothing and needs one object per
quantile; river's histogram keeps ~100-byte bin objects and interpolates inside bins, where
the question here is a tail count that the largest values answer exactly.

>>> mem = LongMemory(generation=100, top=4, min_windows=10)
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
from array import array
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

__all__ = ["LongMemory", "Memory", "Tail"]

_DAY = 86400.0
_HOURS = 24
STATE_VERSION = 1


@dataclass(frozen=True, slots=True)
class Tail:
    """The answer for one value: its tail probability among the service's healthy windows.

    ``p_value`` is (windows at least as bad + 0.5) / (windows + 1) (a lower bound when the
    value is below the kept tail), or, when fewer than ``routine_windows`` were as bad, the
    smaller peaks-over-threshold estimate (a Pareto or exponential fit of the kept tail, its
    index at the upper 95 % confidence bound);
    ``windows`` how many windows it rests on; ``rescaled`` the value after the time-of-day
    rescaling; ``as_bad`` how many learned windows were at least as bad (at least, when the
    value is below the kept tail).

    ``routine``: the service did this at least ``routine_windows`` times in its memory: its
    own bursts, never a reason to confirm anything. ``rare``: not routine, and ``p_value <
    alpha`` with at least ``min_windows`` windows learned. A cold memory finds nothing
    routine and nothing rare.
    """

    p_value: float
    windows: int
    rescaled: float
    as_bad: int
    routine: bool
    rare: bool


@dataclass(slots=True)
class _TailSample:
    """Count of values and the ``top`` largest of them (sorted ascending)."""

    n: int
    top: list[float]

    def add(self, v: float, keep: int) -> None:
        self.n += 1
        top = self.top
        if len(top) < keep:
            bisect.insort(top, v)
        elif v > top[0]:
            del top[0]
            bisect.insort(top, v)

    def at_least(self, v: float) -> tuple[int, bool]:
        """(count of kept values >= v, whether that is the exact count)."""
        top = self.top
        count = len(top) - bisect.bisect_left(top, v)
        return count, (count < len(top) or len(top) == self.n)


#: One-sided normal quantile of the confidence bound on the tail index (95 %).
_TAIL_Z = 1.645


def _heaviest(m: int) -> float:
    """Factor from a tail-index (or scale) estimate on ``m`` excesses to its upper confidence
    bound: for a Pareto (exponential) tail, ``m * estimate / index`` is Gamma(m, 1), so the
    bound divides by its lower ``_TAIL_Z`` quantile over ``m`` (Wilson-Hilferty), ~1.38 at
    m = 31: the estimate's relative standard error is 1/sqrt(m)."""
    c = 1.0 / (9.0 * m)
    low = 1.0 - c - _TAIL_Z * math.sqrt(c)
    return 1.0 / (low * low * low) if low > 0.0 else math.inf


def _exceedance(v: float, kept: list[float], n: int) -> float:
    """Peaks over threshold: P(X >= v) from a fit of the kept tail above its smallest value
    ``u`` (the tail count alone cannot go below ~1/n: beyond the largest value seen, how far
    beyond matters). Positive values: a Pareto tail (Hill's estimator: heavy-tailed bursts
    are the rule for latencies); otherwise an exponential fit of the excesses. Conservative
    for its own uncertainty: the tail index (scale) is its upper confidence bound, so a value
    is called rare only if it is rare for the heaviest tail the kept values allow."""
    if len(kept) < 4 or n <= 0:
        return 1.0
    u = min(kept)
    if v <= u:
        return 1.0
    heaviest = _heaviest(len(kept) - 1)
    if u > 0.0:
        # Positive values (latencies, rates): a Pareto tail, Hill's estimator of its index.
        spread = math.fsum(math.log(x / u) for x in kept) / len(kept)
        if spread <= 0.0:
            return 0.0
        return len(kept) / n * math.pow(v / u, -1.0 / (spread * heaviest))
    scale = math.fsum(x - u for x in kept) / len(kept)
    if scale <= 0.0:
        return 0.0
    return len(kept) / n * math.exp(-(v - u) / (scale * heaviest))


class Memory(Protocol):
    """What the engine keeps per (service, threshold metric): ``LongMemory`` (the state codec
    stores it through its own ``to_state`` / ``from_state``, like a detector)."""

    @property
    def n_learned(self) -> int:
        """Healthy windows learned so far."""
        ...

    @property
    def min_windows(self) -> int:
        """Windows learned before anything is ``rare``."""
        ...

    def learn(self, value: float, ts: float) -> None:
        """Learn one healthy window's value."""
        ...

    def tail(self, value: float, ts: float) -> Tail:
        """How rare ``value`` is for the service at the time of day of ``ts``."""
        ...

    def to_state(self) -> dict[str, Any]:
        """Plain data."""
        ...


class LongMemory:
    """Tail probability of a window's value among one service's healthy windows (days of them).

    Parameters
    ----------
    generation
        Windows per generation (2,880 = one day of 30-s windows); the tail holds the current
        generation and the previous one.
    top
        Largest values kept per generation.
    direction
        ``"up"``: large values are bad (latency, errors); ``"down"``: small values are bad.
    min_windows
        Windows needed before an hour's level is used, and before anything is ``rare``.
    hour_span
        Windows of one hour of day that its running level averages over (~2 days).
    alpha
        Tail probability below which a value is ``rare`` (1e-3: rarer than once in ~8 hours of
        30-s windows).
    routine_windows
        A value at least as bad as this many learned windows is ``routine`` for the service.
    """

    _kind: ClassVar[str] = "LongMemory"
    __slots__ = (
        "generation", "top", "direction", "min_windows", "hour_span", "alpha",
        "routine_windows", "_down", "_level", "_seen", "_cur", "_prev",
    )  # fmt: skip

    def __init__(
        self,
        generation: int = 2880,
        top: int = 32,
        direction: str = "up",
        min_windows: int = 60,
        hour_span: int = 240,
        alpha: float = 1e-3,
        routine_windows: int = 3,
    ) -> None:
        if direction not in ("up", "down"):
            raise ValueError(f"direction must be 'up' or 'down', not {direction!r}")
        self.generation = generation
        self.top = top
        self.direction = direction
        self.min_windows = min_windows
        self.hour_span = hour_span
        self.alpha = alpha
        self.routine_windows = routine_windows
        self._down = direction == "down"
        # Per hour of day, then the whole day: arrays of machine numbers, not lists of float
        # and int objects (learn reads and replaces two of each at every idle window close:
        # one contiguous block instead of four objects scattered in memory).
        self._level = array("d", bytes(8 * (_HOURS + 1)))
        self._seen = array("q", bytes(8 * (_HOURS + 1)))
        self._cur = _TailSample(0, [])
        self._prev: _TailSample | None = None

    @property
    def n_learned(self) -> int:
        """Healthy windows learned so far (not capped)."""
        return self._seen[_HOURS]

    @staticmethod
    def _hour(ts: float) -> int:
        return int((ts % _DAY) // 3600.0) % _HOURS

    def _rescale(self, value: float, hour: int) -> float:
        """``value`` at the day's level: times day level / hour level, once the hour is known."""
        lh, ld = self._level[hour], self._level[_HOURS]
        if self._seen[hour] < self.min_windows or lh <= 0.0 or ld <= 0.0:
            return value
        return value * ld / lh

    def _signed(self, v: float) -> float:
        return v if self.direction == "up" else -v

    def learn(self, value: float, ts: float) -> None:
        """Learn one healthy window's value; ``ts`` is the window's start (epoch seconds).

        Called at every idle window close of every threshold metric: the rescaling is written
        out (``_rescale``'s arithmetic) because the levels it reads are the ones it updates.
        """
        if not math.isfinite(value):
            return
        h = int((ts % _DAY) // 3600.0) % _HOURS
        level, seen = self._level, self._seen
        lh, ld = level[h], level[_HOURS]
        nh = seen[h]
        v = value * ld / lh if nh >= self.min_windows and lh > 0.0 and ld > 0.0 else value
        if self._down:
            v = -v
        cur = self._cur
        if cur.n >= self.generation:
            self._prev, cur = cur, _TailSample(0, [])
            self._cur = cur
        cur.add(v, self.top)
        span = self.hour_span
        seen[h] = nh = nh + 1
        level[h] = lh + (value - lh) / (nh if nh < span else span)
        span *= _HOURS
        seen[_HOURS] = nd = seen[_HOURS] + 1
        level[_HOURS] = ld + (value - ld) / (nd if nd < span else span)

    def tail(self, value: float, ts: float) -> Tail:
        """How rare ``value`` is for this service at the time of day of ``ts``."""
        if not math.isfinite(value):
            return Tail(1.0, 0, value, 0, False, False)
        rescaled = self._rescale(value, self._hour(ts))
        v = self._signed(rescaled)
        n = hits = 0
        exact = True
        kept: list[float] = []
        for gen in (self._cur, self._prev):
            if gen is not None:
                c, ok = gen.at_least(v)
                n, hits, exact = n + gen.n, hits + c, exact and ok
                kept.extend(gen.top)
        p = min(1.0, (hits + 0.5) / (n + 1.0))
        if exact and hits < self.routine_windows:
            p = min(p, _exceedance(v, kept, n))
        routine = hits >= self.routine_windows
        rare = exact and not routine and n >= self.min_windows and p < self.alpha
        return Tail(p, n, rescaled, hits, routine, rare)

    # -- plain-data state ---------------------------------------------------------------------

    def to_state(self) -> dict[str, Any]:
        """JSON-safe plain data; ``from_state`` rebuilds the memory exactly."""
        prev = None if self._prev is None else [self._prev.n, list(self._prev.top)]
        return {
            "kind": "LongMemory",
            "version": STATE_VERSION,
            "params": {
                "generation": self.generation, "top": self.top, "direction": self.direction,
                "min_windows": self.min_windows, "hour_span": self.hour_span,
                "alpha": self.alpha, "routine_windows": self.routine_windows,
            },
            "state": {
                "level": list(self._level), "seen": list(self._seen),
                "cur": [self._cur.n, list(self._cur.top)], "prev": prev,
            },
        }  # fmt: skip

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> LongMemory:
        """Rebuild from ``to_state`` output (also after a JSON round trip)."""
        if state.get("kind") != "LongMemory" or state.get("version") != STATE_VERSION:
            raise ValueError(f"not a LongMemory state: {state.get('kind')!r}")
        obj = cls(**state["params"])
        s = state["state"]
        obj._level = array("d", [float(v) for v in s["level"]])
        obj._seen = array("q", [int(v) for v in s["seen"]])
        obj._cur = _TailSample(int(s["cur"][0]), [float(v) for v in s["cur"][1]])
        if s["prev"] is not None:
            obj._prev = _TailSample(int(s["prev"][0]), [float(v) for v in s["prev"][1]])
        return obj
