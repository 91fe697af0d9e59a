"""``SeriesScorer``: online anomaly scores for one univariate series, and its batch helpers."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from typing import Any

from river.base import AnomalyDetector

from ._base import TINY, QuantileWindow, StatefulDetector, clip_value, squash
from ._period import estimate_period

#: Evidence (in decades of rarity) at which the score is 0.5, and the logistic's width.
SCORE_CENTER = 3.7
SCORE_WIDTH = 0.5
_EWR_ALPHA = 0.2  # residual mean over ~9 points: sustained small shifts and drifts
_PHI_ALPHA = 0.02  # lag-1 autocorrelation memory
_CHECK_EVERY = 256  # learned points between season-length estimates
_KNEE = 2.0  # logistic up to here (score 0.881), then a slow tail that never reaches 1
_S_KNEE = 1.0 / (1.0 + math.exp(-_KNEE))


def graded(z: float) -> float:
    """``squash(z)`` up to z = 2 (0.881), then ``1 - 0.119 / (1 + 0.881 asinh(z - 2))``.

    Same value and slope at the knee, strictly increasing, and below 0.9999 for any finite
    evidence: the strongest points of a series keep their order (no ties at 1.0), so one
    threshold can be selective on any series.

    >>> graded(0.0), graded(2.0) == squash(2.0), graded(1e300) < 0.9999 < 1.0
    (0.5, True, True)
    >>> graded(50.0) < graded(500.0) < graded(5e5)
    True
    """
    if z != z:
        return 0.0
    if z <= _KNEE:
        return squash(z)
    return 1.0 - (1.0 - _S_KNEE) / (1.0 + _S_KNEE * math.asinh(z - _KNEE))


def _value(x: Mapping[Any, float]) -> float:
    if "value" in x:
        return float(x["value"])
    if len(x) == 1:
        return float(next(iter(x.values())))
    raise ValueError("SeriesScorer expects {'value': v} or a dict with a single key")


def _rarity(e: float, cal: tuple[float, float, float, float]) -> float:
    """Decades of rarity of evidence ``e`` given (q90, 1 / (q99 - q90), q99, tail index).

    1 at the 90th percentile, 2 at the 99th; beyond, the lesser of an exponential and a
    Pareto extrapolation, so a heavy-tailed history is not over-trusted.
    """
    q90, k, q99, alpha = cal
    lev = 1.0 + (e - q90) * k
    if e > q99 and alpha > 0.0:
        lp = 2.0 + alpha * math.log10(e / q99)
        return 0.5 * (lp + lev) if lp < lev else lev
    return lev


def _median(vals: list[float]) -> float:
    n = len(vals)
    if n == 1:
        return vals[0]
    s = sorted(vals)
    return s[n // 2] if n % 2 else 0.5 * (s[n // 2 - 1] + s[n // 2])


class SeriesScorer(AnomalyDetector, StatefulDetector):
    """Online anomaly detector for one univariate series; scores in [0, 1].

    Two forecasters run side by side: a level + lag-1 autoregression (any series) and, once
    a season length is found in the recent autocorrelation, a seasonal-naive forecaster (median
    of the last seasons at the same phase, +-1 step of jitter, around a one-season moving
    average). Three kinds of evidence come from the forecast residuals: the point residual
    (spikes, abrupt shifts), a short running mean of residuals (small sustained shifts, drift)
    and the distance from the long-run level or seasonal profile (contextual anomalies).
    Each is calibrated against its own recent history (90th and 99th percentile of the last
    ``window`` values, with an exponential tail beyond), so that the evidence is counted in
    decades of rarity whatever the scale or noise of the series; the score is a logistic of the
    strongest evidence, 0.5 at 1e-5 rarity.

    ``learn_one`` protects the model: a point scoring at least ``protect`` only nudges the level
    with a winsorised value. After ``relearn_after`` such points (leaky count), the model accepts
    the new regime: its history is shifted by the median departure (a level shift is re-learned
    at once) and the next ``relearn_after`` points are learned in full.

    Parameters
    ----------
    window
        Number of recent evidence values that calibrate each kind of evidence.
    grace_period
        Points learned before any non-zero score.
    protect
        Score at or above which a point is not learned as normal.
    relearn_after
        Protected points after which a persistent change is accepted as the new normal.
    seasonal
        Look for a season length (autocorrelation of the recent ``2.5 * max_period`` points).
    min_period, max_period
        Season lengths considered, in points.
    level_span
        Span (points) of the exponential moving average that tracks the long-run level.

    Examples
    --------
    >>> import math, random
    >>> from models.anomaly import SeriesScorer
    >>> rng = random.Random(1)
    >>> scorer = SeriesScorer()
    >>> for i in range(2000):
    ...     scorer.learn_one({"value": 100 + 10 * math.sin(i / 24) + rng.gauss(0, 1)})
    >>> scorer.score_one({"value": 100 + 10 * math.sin(2000 / 24)}) < 0.1
    True
    >>> scorer.score_one({"value": 160.0}) > 0.9
    True
    """

    _kind = "SeriesScorer"

    def __init__(
        self,
        window: int = 1000,
        grace_period: int = 64,
        protect: float = 0.9,
        relearn_after: int = 24,
        seasonal: bool = True,
        min_period: int = 4,
        max_period: int = 2016,
        level_span: int = 200,
    ) -> None:
        self.window = window
        self.grace_period = grace_period
        self.protect = protect
        self.relearn_after = relearn_after
        self.seasonal = seasonal
        self.min_period = min_period
        self.max_period = max_period
        self.level_span = level_span

    # -- state --------------------------------------------------------------------------------

    _FLOATS = (
        "mu", "amp", "last", "sxy_n", "sxx_n", "ewr_n", "msum", "last_base_s", "sxy_s", "sxx_s",
        "ewr_s", "corr_s", "corr_step",
    )  # fmt: skip
    _INTS = (
        "n", "head", "period", "misses", "since_check", "streak", "streak_len", "accept",
    )  # fmt: skip

    def _build(self, v: float) -> None:
        w = self.window
        self._n = 0
        self._mu = v  # long-run level (EWMA)
        self._amp = 0.0  # EW mean |v - mu|: the series' own unit, for scale floors
        self._last = v  # last learned value (winsorised when protected)
        self._sxy_n = self._sxx_n = self._ewr_n = 0.0
        self._wn = [QuantileWindow(w) for _ in range(3)]
        self._cap = max(int(2.5 * self.max_period) + 2, 16) if self.seasonal else 1
        self._buf: list[float] = []  # raw values, ring of _cap
        self._mbuf: list[float] = []  # level estimate before each buffered value
        self._head = 0
        self._msum = 0.0  # sum of the last `period` buffered values
        self._period = 0
        self._misses = 0
        self._since_check = 0
        self._last_base_s = v
        self._sxy_s = self._sxx_s = self._ewr_s = 0.0
        self._corr_s = self._corr_step = 0.0  # level correction while the season mean catches up
        self._ws = [QuantileWindow(w) for _ in range(3)]
        self._streak = 0
        self._streak_len = 0
        self._accept = 0
        keep = max(1, self.relearn_after)
        self._recent_n: deque[float] = deque(maxlen=keep)
        self._recent_s: deque[float] = deque(maxlen=keep)
        self._cal = [(0.0, 0.0, 0.0, 0.0)] * 6

    def _dump(self) -> dict[str, Any] | None:
        if "_mu" not in self.__dict__:
            return None
        out: dict[str, Any] = {k: getattr(self, "_" + k) for k in (*self._FLOATS, *self._INTS)}
        out["wn"] = [q.dump() for q in self._wn]
        out["ws"] = [q.dump() for q in self._ws]
        out["buf"] = list(self._buf)
        out["mbuf"] = list(self._mbuf)
        out["recent_n"] = list(self._recent_n)
        out["recent_s"] = list(self._recent_s)
        return out

    def _load(self, s: dict[str, Any]) -> None:
        self._build(float(s["mu"]))
        for key in self._FLOATS:
            setattr(self, "_" + key, float(s[key]))
        for key in self._INTS:
            setattr(self, "_" + key, int(s[key]))
        self._wn = [QuantileWindow(self.window, [float(v) for v in q]) for q in s["wn"]]
        self._ws = [QuantileWindow(self.window, [float(v) for v in q]) for q in s["ws"]]
        self._buf = [float(v) for v in s["buf"]]
        self._mbuf = [float(v) for v in s["mbuf"]]
        self._recent_n.extend(float(v) for v in s["recent_n"])
        self._recent_s.extend(float(v) for v in s["recent_s"])
        self._recalibrate()

    # -- scoring ------------------------------------------------------------------------------

    def _seasonal_ready(self) -> bool:
        return self._period > 0 and len(self._buf) > self._period + 2

    def _evaluate(self, v: float) -> tuple[float, float, float, float, float, float, bool]:
        """(evidence, N residual, N new ewr, S residual, S new ewr, S base, S used)."""
        mu = self._mu
        sxx = self._sxx_n
        phi = self._sxy_n / sxx if sxx > TINY else 0.0
        phi = 0.0 if phi < 0.0 else (0.99 if phi > 0.99 else phi)
        r_n = v - (mu + phi * (self._last - mu))
        ewr_n = self._ewr_n + _EWR_ALPHA * (r_n - self._ewr_n)
        cal = self._cal
        l1n = _rarity(abs(r_n), cal[0])
        l2n = _rarity(abs(ewr_n), cal[1])
        l3n = _rarity(abs(v - mu), cal[2])
        if not self._seasonal_ready():
            ev = l1n if l1n > l2n else l2n
            return (ev if ev > l3n else l3n), r_n, ewr_n, 0.0, 0.0, mu, False
        r_s, base_s = self._seasonal_residual(v)
        ewr_s = self._ewr_s + _EWR_ALPHA * (r_s - self._ewr_s)
        # Both residuals are in the series' units: until channel S has its own calibration,
        # it borrows channel N's.
        off = 3 if len(self._ws[0]) >= max(self.grace_period, self.window // 4) else 0
        l1s = _rarity(abs(r_s), cal[off])
        l2s = _rarity(abs(ewr_s), cal[off + 1])
        l3s = _rarity(abs(v - base_s), cal[off + 2])
        # A point must surprise both forecasters (a daily batch-job spike is no anomaly), while
        # a sustained departure from the seasonal profile is enough on its own.
        ev = l1n if l1n < l1s else l1s
        ev = ev if ev > l2s else l2s
        return (ev if ev > l3s else l3s), r_n, ewr_n, r_s, ewr_s, base_s, True

    def _seasonal_residual(self, v: float) -> tuple[float, float]:
        """Residual and base of the seasonal forecaster."""
        buf = self._buf
        mbuf = self._mbuf
        cap = len(buf)
        head = self._head % cap
        p = self._period
        seasons = min(3, (cap - 2) // p)
        level = self._msum / p + self._corr_s
        sxx = self._sxx_s
        phi = self._sxy_s / sxx if sxx > TINY else 0.0
        phi = 0.0 if phi < 0.0 else (0.99 if phi > 0.99 else phi)
        ar = phi * (self._last - self._last_base_s)
        target = v - level - ar
        offs = []
        for k in range(1, seasons + 1):
            # The same phase k seasons ago, +-1 step: the closest of three absorbs jitter.
            i = (head - k * p) % cap
            best = buf[i] - mbuf[i]
            i0 = (i - 1) % cap
            o = buf[i0] - mbuf[i0]
            if abs(target - o) < abs(target - best):
                best = o
            i1 = (i + 1) % cap
            o = buf[i1] - mbuf[i1]
            if abs(target - o) < abs(target - best):
                best = o
            offs.append(best)
        base = level + (_median(offs) if seasons > 1 else offs[0])
        return v - base - ar, base

    def score_one(self, x: Mapping[Any, float]) -> float:
        """Anomaly score of ``x`` in [0, 1] given the points learned so far; learns nothing."""
        v = _value(x)
        if not math.isfinite(v) or "_mu" not in self.__dict__ or self._n < self.grace_period:
            return 0.0
        ev = self._evaluate(clip_value(v))[0]
        # Inside a protected run the departure is known: only what is still new counts, so a
        # change alarms at its onset and fades (log10 of the run's length), instead of holding
        # the same high score for the ~25 points until it is re-learned.
        return graded((ev - math.log10(1.0 + self._streak) - SCORE_CENTER) / SCORE_WIDTH)

    # -- learning -----------------------------------------------------------------------------

    def learn_one(self, x: Mapping[Any, float]) -> None:
        """Learn one point (non-finite values are ignored); anomalous points are protected."""
        v = _value(x)
        if not math.isfinite(v):
            return None
        v = clip_value(v)
        if "_mu" not in self.__dict__:
            self._build(v)
            self._store(v)
            self._n = 1
            return None
        ev, r_n, ewr_n, r_s, ewr_s, base_s, has_s = self._evaluate(v)
        score = graded((ev - SCORE_CENTER) / SCORE_WIDTH)
        self._n += 1
        self._recent_n.append(v - self._mu)
        if has_s:
            self._recent_s.append(v - base_s)
        if self._n > self.grace_period and score >= self.protect and self._accept == 0:
            self._streak += 1
            self._streak_len += 1
            if self._streak < self.relearn_after:
                if self._streak == 1:
                    # The calibration counts events, not points: the first point of a protected
                    # run enters it. So a departure the series makes routinely (a flat series'
                    # one-unit steps, 1 % of its points) becomes as common as it is, while a
                    # level shift adds one value, not 24.
                    self._calibrate(r_n, ewr_n, v - self._mu, r_s, ewr_s, v - base_s, has_s)
                # Winsorise: move the level only as far as a 99th-percentile residual would.
                lim = self._wn[0].quantile(0.99)
                clean = v - r_n + (lim if r_n > lim else (-lim if r_n < -lim else r_n))
                self._update_level(clean)
                self._store(v)  # raw: a recurring pattern must be seen to be recognised
                self._last = clean
                return None
            self._rebase()
        elif self._streak:
            self._streak -= 1
            self._streak_len = self._streak_len + 1 if self._streak else 0
        if self._accept:
            self._accept -= 1
        self._learn_healthy(v, r_n, ewr_n, r_s, ewr_s, base_s, has_s)
        return None

    def _learn_healthy(
        self, v: float, r_n: float, ewr_n: float, r_s: float, ewr_s: float, base_s: float,
        has_s: bool,
    ) -> None:
        """Fold a point that is not under protection into the level, the residual windows
        and (where a season is known) the seasonal model."""
        mu = self._mu
        dev_prev = self._last - mu
        self._sxy_n += _PHI_ALPHA * (dev_prev * (v - mu) - self._sxy_n)
        self._sxx_n += _PHI_ALPHA * (dev_prev * dev_prev - self._sxx_n)
        self._ewr_n = ewr_n
        wn = self._wn
        wn[0].push(abs(r_n))
        wn[1].push(abs(ewr_n))
        wn[2].push(abs(v - mu))
        if has_s:
            dev_s = self._last - self._last_base_s
            self._sxy_s += _PHI_ALPHA * (dev_s * (v - base_s) - self._sxy_s)
            self._sxx_s += _PHI_ALPHA * (dev_s * dev_s - self._sxx_s)
            self._ewr_s = ewr_s
            ws = self._ws
            ws[0].push(abs(r_s))
            ws[1].push(abs(ewr_s))
            ws[2].push(abs(v - base_s))
            self._last_base_s = base_s
        self._update_level(v)
        self._store(v)
        self._last = v
        self._recalibrate()

    def _calibrate(
        self, r_n: float, ewr_n: float, d_n: float, r_s: float, ewr_s: float, d_s: float, s: bool
    ) -> None:
        """Push one point's evidence into the calibration windows and recalibrate."""
        for q, e in zip(self._wn, (r_n, ewr_n, d_n), strict=True):
            q.push(abs(e))
        if s:
            for q, e in zip(self._ws, (r_s, ewr_s, d_s), strict=True):
                q.push(abs(e))
        self._recalibrate()

    def _update_level(self, v: float) -> None:
        a = 2.0 / (self.level_span + 1.0)
        self._mu += a * (v - self._mu)
        self._amp += a * (abs(v - self._mu) - self._amp)
        if self._corr_step:
            c = self._corr_s - self._corr_step
            if c * self._corr_s <= 0.0:
                c = self._corr_step = 0.0
            self._corr_s = c

    def _rebase(self) -> None:
        """Accept a persistent change: move the levels by the median recent departure.

        Channel S's level is a one-season mean, which catches up with a level shift linearly
        within one season: a correction bridges the gap and fades out at the same pace.
        """
        d = _median(list(self._recent_n))
        self._mu += d
        self._last += d
        if self._period and self._recent_s:
            ds = _median(list(self._recent_s))
            self._last_base_s += ds
            self._corr_s += ds
            self._corr_step = self._corr_s / max(1, self._period - self._streak_len)
        self._ewr_n = self._ewr_s = 0.0
        self._recent_n.clear()
        self._recent_s.clear()
        self._streak = self._streak_len = 0
        self._accept = self.relearn_after

    def _store(self, c: float) -> None:
        """Append a raw value to the seasonal buffer; re-estimate the season now and then."""
        if not self.seasonal:
            return
        buf = self._buf
        n = len(buf)
        p = self._period
        head = self._head
        level = c
        if p:
            level = (self._msum / min(n, p) if n else c) + self._corr_s
            self._msum += c - (buf[(head - p) % self._cap] if n >= p else 0.0)
        if n < self._cap:
            buf.append(c)
            self._mbuf.append(level)
            self._head = (n + 1) % self._cap
        else:
            buf[head] = c
            self._mbuf[head] = level
            self._head = (head + 1) % self._cap
        self._since_check += 1
        if self._since_check >= min(_CHECK_EVERY, max(32, n // 4)):
            self._since_check = 0
            self._check_period()

    def _ordered(self) -> list[float]:
        buf = self._buf
        if len(buf) < self._cap:
            return list(buf)
        return buf[self._head :] + buf[: self._head]

    def _check_period(self) -> None:
        p = estimate_period(self._ordered(), self.min_period, self.max_period, current=self._period)
        old = self._period
        if p == 0:
            self._misses += 1
            if old and self._misses < 2:
                return
        else:
            self._misses = 0
        if p == old:
            return
        # A small correction keeps channel S's calibration; a new season restarts it.
        self._set_period(p, restart=not (old and p and abs(p - old) <= max(1, int(0.05 * old))))

    def _set_period(self, p: int, restart: bool = True) -> None:
        """Switch season length: rebuild the one-season means, restart channel S if asked."""
        self._period = p
        order = self._ordered()
        mb: list[float] = []
        acc = 0.0
        for i, c in enumerate(order):
            mb.append(acc / min(i, p) if (i and p) else c)
            acc += c - (order[i - p] if p and i >= p else 0.0)
        self._msum = math.fsum(order[-p:]) if p else 0.0
        self._buf = order
        self._mbuf = mb
        self._head = len(order) % self._cap
        self._corr_s = self._corr_step = 0.0
        if restart:
            self._last_base_s = self._mu
            self._sxy_s = self._sxx_s = self._ewr_s = 0.0
            self._ws = [QuantileWindow(self.window) for _ in range(3)]
            self._recent_s.clear()
            self._recalibrate()

    def _recalibrate(self) -> None:
        """Per evidence kind: (90th percentile, 1 / spread up to the 99th percentile).

        The spread is at least half the mean excess of the top 1 % over the 99th percentile:
        on a series that is flat 99 % of the time (q90 = q99 = 0) the rare steps it does take
        set the scale, instead of a tiny floor that would make each of them 1e5 times rare.
        """
        floor = 1e-3 * self._amp + 1e-9 * abs(self._mu) + TINY
        cal = []
        for q in (*self._wn, *self._ws):
            q90 = q.quantile(0.9)
            q99 = q.quantile(0.99)
            srt = q.sorted
            k = max(1, len(srt) // 100)
            excess = 0.5 * (math.fsum(srt[-k:]) / k - q99) if srt else 0.0
            spread = max(q99 - q90, 0.25 * q90, floor, excess)
            alpha = 1.0 / math.log10(q99 / q90) if q90 > 0.0 and q99 > 1.001 * q90 else 0.0
            cal.append((q90, 1.0 / spread, q99, alpha))
        self._cal = cal
