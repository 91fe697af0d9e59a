"""``WindowDetector``: one (service, metric) scored against its own healthy closed windows."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

from river.base import AnomalyDetector

from ._base import TINY, StatefulDetector, clip_value, decades, squash, t_two_sided_tail

#: Evidence, in decades of rarity (Bonferroni-corrected over features), at which the score is
#: 0.5, and the logistic's width: 1e-2 scores 0.05, 1e-3 scores 0.27, 1e-5 scores 0.98.
WINDOW_CENTER = 3.5
WINDOW_WIDTH = 0.5
_DIRECTIONS = ("both", "up", "down")


def robust_location_scale(
    values: Sequence[float], rel_floor: float, abs_floor: float
) -> tuple[float, float]:
    """Mean and standard deviation after dropping points beyond 4 MADs of the median.

    The scale never falls below ``rel_floor * |location| + abs_floor``, so a flat history does
    not make a tiny wiggle look like an anomaly.

    >>> robust_location_scale([1.0, 1.0, 1.0, 1.0], 0.05, 0.0)
    (1.0, 0.05)
    """
    srt = sorted(values)
    n = len(srt)
    med = srt[n // 2] if n % 2 else 0.5 * (srt[n // 2 - 1] + srt[n // 2])
    dev = sorted(abs(v - med) for v in srt)
    mad = dev[n // 2] if n % 2 else 0.5 * (dev[n // 2 - 1] + dev[n // 2])
    lim = 4.0 * 1.4826 * mad
    kept = [v for v in srt if abs(v - med) <= lim] if mad > 0.0 else srt
    m = math.fsum(kept) / len(kept)
    var = math.fsum((v - m) * (v - m) for v in kept) / max(1, len(kept) - 1)
    floor = rel_floor * abs(m) + abs_floor
    return m, max(math.sqrt(var), floor, TINY)


class WindowDetector(AnomalyDetector, StatefulDetector):
    """Scores a closed window's features (mean, p95, max, coverage, ...) against history.

    Each feature is compared with the same feature over the last ``history`` windows that the
    caller judged healthy: a Student-t prediction interval around a robust mean (``n - 1``
    degrees of freedom, so a short history is less sure of itself). The smallest tail
    probability, Bonferroni-corrected for the number of features, is turned into decades of
    rarity and squashed into [0, 1]. ``score_one`` never learns; the engine calls ``learn_one``
    for healthy windows only. Before two healthy windows the score is 0: the caller must treat
    the model as cold until ``n_learned`` reaches its policy's ``min_baseline_windows``.

    Parameters
    ----------
    history
        Healthy windows kept per feature.
    direction
        ``"both"``, ``"up"`` (only increases are anomalous) or ``"down"``.
    rel_floor, abs_floor
        Scale floor ``rel_floor * |level| + abs_floor`` for near-constant histories.

    Examples
    --------
    >>> import random
    >>> from models.anomaly import WindowDetector
    >>> rng = random.Random(3)
    >>> det = WindowDetector()
    >>> for _ in range(30):
    ...     det.learn_one({"mean": rng.gauss(200, 30), "p95": rng.gauss(300, 40)})
    >>> det.n_learned
    30
    >>> det.score_one({"mean": 215.0, "p95": 310.0}) < 0.3
    True
    >>> det.score_one({"mean": 600.0, "p95": 900.0}) > 0.9
    True
    """

    _kind = "WindowDetector"

    def __init__(
        self,
        history: int = 120,
        direction: str = "both",
        rel_floor: float = 0.05,
        abs_floor: float = 1e-9,
    ) -> None:
        self.history = history
        self.direction = direction
        self.rel_floor = rel_floor
        self.abs_floor = abs_floor
        if direction not in _DIRECTIONS:
            raise ValueError(f"direction must be one of {_DIRECTIONS}, not {direction!r}")

    def _build(self) -> None:
        self._n_learned = 0
        self._hist: dict[str, deque[float]] = {}
        self._fit: dict[str, tuple[float, float, int]] = {}

    @property
    def n_learned(self) -> int:
        """Healthy windows learned so far (not capped by ``history``)."""
        return int(self.__dict__.get("_n_learned", 0))

    def learn_one(self, x: Mapping[Any, float]) -> None:
        """Learn one healthy window's features (non-finite values are skipped)."""
        if "_hist" not in self.__dict__:
            self._build()
        self._n_learned += 1
        for key in sorted(x, key=str):
            v = float(x[key])
            if not math.isfinite(v):
                continue
            name = str(key)
            h = self._hist.get(name)
            if h is None:
                h = self._hist[name] = deque(maxlen=self.history)
            h.append(clip_value(v))
            self._refit(name)
        return None

    def _refit(self, name: str) -> None:
        h = self._hist[name]
        m, s = robust_location_scale(h, self.rel_floor, self.abs_floor)
        self._fit[name] = (m, s, len(h))

    def feature_tails(self, x: Mapping[Any, float]) -> dict[str, float]:
        """Per feature: the (one- or two-sided) tail probability of its value; for evidence."""
        fit = self.__dict__.get("_fit", {})
        out: dict[str, float] = {}
        for key in sorted(x, key=str):
            name = str(key)
            f = fit.get(name)
            v = float(x[key])
            if f is None or f[2] < 2 or not math.isfinite(v):
                continue
            m, s, n = f
            t = (clip_value(v) - m) / (s * math.sqrt(1.0 + 1.0 / n))
            p = t_two_sided_tail(t, n - 1.0)
            if self.direction != "both":
                up = self.direction == "up"
                p = 0.5 * p if (t > 0) == up else 1.0 - 0.5 * p
            out[name] = p
        return out

    def score_one(self, x: Mapping[Any, float]) -> float:
        """Score in [0, 1] of one window's features against the healthy history."""
        tails = self.feature_tails(x)
        if not tails:
            return 0.0
        p = min(1.0, min(tails.values()) * len(tails))
        return squash((decades(p) - WINDOW_CENTER) / WINDOW_WIDTH)

    def _dump(self) -> dict[str, Any] | None:
        if "_hist" not in self.__dict__:
            return None
        return {
            "n_learned": self._n_learned,
            "history": {k: list(self._hist[k]) for k in sorted(self._hist)},
        }

    def _load(self, s: dict[str, Any]) -> None:
        self._build()
        self._n_learned = int(s["n_learned"])
        for name in sorted(s["history"]):
            self._hist[name] = deque((float(v) for v in s["history"][name]), maxlen=self.history)
            self._refit(name)
