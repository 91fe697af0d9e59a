"""``JointDetector``: one service's metrics together, to catch unusual combinations."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

from river.base import AnomalyDetector

from ._base import TINY, StatefulDetector, clip_value, decades, f_tail, squash
from .window import WINDOW_CENTER, WINDOW_WIDTH


def _cholesky(a: list[list[float]]) -> list[list[float]]:
    """Lower-triangular L with L L^T = a, for a symmetric positive definite ``a``."""
    d = len(a)
    low = [[0.0] * d for _ in range(d)]
    for i in range(d):
        li = low[i]
        for j in range(i + 1):
            lj = low[j]
            acc = a[i][j]
            for k in range(j):
                acc -= li[k] * lj[k]
            if i == j:
                li[j] = math.sqrt(acc if acc > TINY else TINY)
            else:
                li[j] = acc / lj[j]
    return low


class JointDetector(AnomalyDetector, StatefulDetector):
    """Hotelling T² of a service's metric vector against its healthy windows; score in [0, 1].

    Each metric is standardised by the mean and standard deviation of the last ``history``
    healthy windows (with the same scale floor as ``WindowDetector``); the correlation matrix is
    shrunk towards the identity by ``d / (4n + d)`` (a short history cannot support a full
    covariance) and the squared Mahalanobis distance is read as a Hotelling prediction
    statistic, ``F(d, n - d)``. Its tail probability, in decades, is squashed exactly as
    ``WindowDetector`` does, so both scores mean the same. A departure that breaks the usual
    correlation of two metrics (latency up while traffic falls) scores higher than the same
    departures seen separately. Deterministic, and O(d²) per window plus one d x d inverse.

    ``metrics`` fixes the metric names; by default they are the sorted keys of the first
    learned window. A metric missing from a scored window counts as at its mean; unknown ones
    are ignored. ``score_one`` never learns; the engine calls ``learn_one`` on healthy windows.

    ``context`` names metrics that are conditions, not symptoms (the engine passes the policy's
    traffic metrics). They are ordered first, and only the *conditional* departure of the other
    metrics given them is scored: the part of the Mahalanobis distance left once the context
    has been regressed out (the trailing block of the Cholesky solve), with the prediction
    variance inflated by the context's leverage ``1 + 1/n + T²_context/(n - 1)`` and read as
    a Hotelling statistic of ``d - c`` dimensions on ``n - c - 1`` degrees of freedom. So a
    context level the history never saw (a daily traffic cycle drifting past a short baseline)
    scores nothing by itself and widens, rather than narrows, what counts as normal for the
    others; "quieter yet slower" still scores. With only context metrics the score is 0.

    ``up`` names metrics whose only bad direction is up (error rate, latency): such a metric
    below what the context predicts for it counts as exactly at that prediction, so an
    improvement (latency falling while traffic dips) never scores; a rise still does.

    Examples
    --------
    >>> import random
    >>> from models.anomaly import JointDetector
    >>> rng = random.Random(5)
    >>> det = JointDetector()
    >>> for _ in range(40):
    ...     load = rng.gauss(0, 1)
    ...     det.learn_one({"rps": 100 + 10 * load, "latency": 200 + 20 * load + rng.gauss(0, 3)})
    >>> det.score_one({"rps": 110.0, "latency": 220.0}) < 0.3  # busier, slower: as usual
    True
    >>> det.score_one({"rps": 90.0, "latency": 220.0}) > 0.9  # quieter yet slower: unusual
    True
    """

    _kind = "JointDetector"

    def __init__(
        self,
        metrics: Sequence[str] | None = None,
        history: int = 120,
        rel_floor: float = 0.05,
        abs_floor: float = 1e-9,
        context: Sequence[str] | None = None,
        up: Sequence[str] | None = None,
    ) -> None:
        self.metrics = metrics
        self.context = context
        self.up = up
        self.history = history
        self.rel_floor = rel_floor
        self.abs_floor = abs_floor

    @property
    def n_learned(self) -> int:
        """Healthy windows learned so far (not capped by ``history``)."""
        return int(self.__dict__.get("_n_learned", 0))

    def _build(self, names: list[str]) -> None:
        d = len(names)
        # Context metrics first: the trailing block of the Cholesky solve is then the departure of
        # the others given the context.
        ctx = set(self.context or ())
        self._names = [n for n in names if n in ctx] + [n for n in names if n not in ctx]
        self._n_ctx = len(names) - sum(1 for n in names if n not in ctx)
        self._n_learned = 0
        self._rows: deque[list[float]] = deque()
        # Sliding sums of (row - ref), made exact again every `history` windows.
        self._ref = [0.0] * d
        self._s1 = [0.0] * d
        self._s2 = [[0.0] * d for _ in range(d)]
        self._since_exact = 0
        self._fit: tuple[list[float], list[float], list[list[float]]] | None = None

    def _vector(self, x: Mapping[Any, float], fill: list[float] | None) -> list[float] | None:
        out: list[float] = []
        for i, name in enumerate(self._names):
            v = x.get(name)
            if v is None or not math.isfinite(float(v)):
                if fill is None:
                    return None
                out.append(fill[i])
            else:
                out.append(clip_value(float(v)))
        return out

    def learn_one(self, x: Mapping[Any, float]) -> None:
        """Learn one healthy window (skipped unless every metric is present and finite)."""
        if "_names" not in self.__dict__:
            names = list(self.metrics) if self.metrics is not None else sorted(map(str, x))
            self._build(names)
        row = self._vector(x, None)
        if row is None:
            return None
        self._n_learned += 1
        rows = self._rows
        rows.append(row)
        self._since_exact += 1
        if self._since_exact >= self.history or len(rows) == 1:
            while len(rows) > self.history:
                rows.popleft()
            self._exact_sums()
        else:
            self._add(row, 1.0)
            if len(rows) > self.history:
                self._add(rows.popleft(), -1.0)
        self._refit()
        return None

    def _add(self, row: list[float], sign: float) -> None:
        ref = self._ref
        dev = [v - r for v, r in zip(row, ref, strict=True)]
        s1 = self._s1
        for a, da in enumerate(dev):
            s1[a] += sign * da
            sa = self._s2[a]
            for b in range(a + 1):
                sa[b] += sign * da * dev[b]

    def _exact_sums(self) -> None:
        """Recompute the sums around the current mean (bounds rounding drift)."""
        rows = self._rows
        d = len(self._names)
        n = len(rows)
        self._ref = [math.fsum(r[a] for r in rows) / n for a in range(d)]
        self._s1 = [0.0] * d
        self._s2 = [[0.0] * d for _ in range(d)]
        for r in rows:
            self._add(r, 1.0)
        self._since_exact = 0

    def _refit(self) -> None:
        n = len(self._rows)
        d = len(self._names)
        if n < 2 or d == 0:
            self._fit = None
            return
        s1, s2, ref = self._s1, self._s2, self._ref
        mean = [ref[a] + s1[a] / n for a in range(d)]
        cov = [[0.0] * d for _ in range(d)]
        for a in range(d):
            for b in range(a + 1):
                c = (s2[a][b] - s1[a] * s1[b] / n) / (n - 1)
                cov[a][b] = cov[b][a] = c
        scale = [
            max(
                math.sqrt(max(cov[a][a], 0.0)), self.rel_floor * abs(mean[a]) + self.abs_floor, TINY
            )
            for a in range(d)
        ]
        lam = d / (4.0 * n + d)
        corr = [
            [(1.0 - lam) * cov[a][b] / (scale[a] * scale[b]) + (lam if a == b else 0.0)
             for b in range(d)]
            for a in range(d)
        ]  # fmt: skip
        self._fit = (mean, scale, _cholesky(corr))

    def score_one(self, x: Mapping[Any, float]) -> float:
        """Score in [0, 1] of one window's metric vector against the healthy history."""
        fit = self.__dict__.get("_fit")
        if fit is None:
            return 0.0
        mean, scale, low = fit
        row = self._vector(x, mean)
        assert row is not None
        z = [(v - m) / s for v, m, s in zip(row, mean, scale, strict=True)]
        # T² = z' C^-1 z = |y|² where L y = z (forward substitution).
        y: list[float] = []
        t2 = 0.0
        t2_ctx = 0.0
        c = self._n_ctx
        up = set(self.__dict__.get("up") or ())
        for a, za in enumerate(z):
            la = low[a]
            if a >= c and self._names[a] in up:
                # One-sided: never below its expectation given the context (L21 y_context).
                expect = math.fsum(la[b] * y[b] for b in range(c))
                za = expect if za < expect else za
            acc = za
            for b, yb in enumerate(y):
                acc -= la[b] * yb
            ya = acc / la[a]
            y.append(ya)
            if a < c:
                t2_ctx += ya * ya
            else:
                t2 += ya * ya
        n = len(self._rows)
        d = len(z) - c
        if d <= 0:
            return 0.0
        # Residual degrees of freedom after regressing on the context (and the mean), and the
        # prediction-variance inflation of a new window at the context's distance from the mean.
        # Without context: T² n (n - d) / ((n + 1) d (n - 1)) ~ F(d, n - d), as before.
        nu = n - 1 - c
        if n > d + c + 1:
            if c:
                inflate = 1.0 + 1.0 / n + t2_ctx / (n - 1)
                f = t2 * nu / (n - 1) / inflate * (nu - d + 1) / (nu * d)
            else:
                f = t2 * n * (n - d) / ((n + 1) * d * (n - 1))
            p = f_tail(f, d, nu - d + 1)
        else:  # too short for Hotelling: a conservative per-metric bound
            p = min(1.0, d * math.erfc(math.sqrt(max(t2, 0.0) / d) / math.sqrt(2.0)))
        return squash((decades(p) - WINDOW_CENTER) / WINDOW_WIDTH)

    def _dump(self) -> dict[str, Any] | None:
        if "_names" not in self.__dict__:
            return None
        return {
            "names": list(self._names), "n_learned": self._n_learned,
            "rows": [list(r) for r in self._rows], "ref": list(self._ref), "s1": list(self._s1),
            "s2": [list(r) for r in self._s2], "since_exact": self._since_exact,
        }  # fmt: skip

    def _load(self, s: dict[str, Any]) -> None:
        self._build([str(v) for v in s["names"]])
        self._n_learned = int(s["n_learned"])
        self._rows.extend([float(v) for v in r] for r in s["rows"])
        self._ref = [float(v) for v in s["ref"]]
        self._s1 = [float(v) for v in s["s1"]]
        self._s2 = [[float(v) for v in r] for r in s["s2"]]
        self._since_exact = int(s["since_exact"])
        self._refit()
