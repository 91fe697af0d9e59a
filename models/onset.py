"""Onset attribution: did a metric's departure begin before the deploy?

A release is to blame only for what started with it. Given the baseline windows (before the
deploy) and the observation windows (after), ``attribute_onset`` looks for

- a **shift** that began inside the baseline: the most likely single change point of the
  whole series (baseline + observation, the largest standardised two-sample mean difference)
  lies before the deploy, and the baseline windows after it already carry at least
  ``min_share`` of the departure seen after the deploy, significantly (``min_z`` noise units);
- a **trend** already under way: the baseline's Theil-Sen slope is significant (it moves the
  level by ``min_z`` noise units across the baseline) and, extrapolated, explains at least
  ``min_share`` of the departure.

The noise unit is the robust spread of successive differences of the baseline (MAD of the
first differences / (0.6745 * sqrt 2)), which a shift or a trend inside the baseline does not
inflate (a CV over the baseline does, and misses a shift confined to its last windows).

>>> base = [100.0, 101.0, 99.0, 100.0, 102.0, 98.0, 100.0, 101.0, 99.0, 100.0] + [130.0] * 4
>>> attribute_onset(base, [131.0, 129.0, 132.0]).kind
'shift'
>>> attribute_onset(base[:10], [131.0, 129.0, 132.0]).before_deploy
False
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Onset", "attribute_onset", "noise_unit"]


@dataclass(frozen=True, slots=True)
class Onset:
    """Where a departure began: ``kind`` is ``shift``, ``trend`` or ``none``.

    ``windows_before``: windows before the deploy at which the shift began (0 unless a shift);
    ``share``: the part of the observed departure already present before the deploy (for a
    trend: the part the trend explains); ``departure``: the observed departure, in the
    metric's units, in the bad direction.
    """

    kind: str
    windows_before: int
    share: float
    departure: float
    detail: str

    @property
    def before_deploy(self) -> bool:
        """True when the departure began before the deploy (a shift or a trend)."""
        return self.kind != "none"


def _median(values: Sequence[float]) -> float:
    s = sorted(values)
    n = len(s)
    return s[n // 2] if n % 2 else 0.5 * (s[n // 2 - 1] + s[n // 2])


def noise_unit(values: Sequence[float]) -> float:
    """Robust noise standard deviation from successive differences (immune to shifts, trends)."""
    if len(values) < 3:
        return 0.0
    diffs = [b - a for a, b in zip(values, values[1:], strict=False)]
    med = _median(diffs)
    return _median([abs(d - med) for d in diffs]) / (0.6745 * math.sqrt(2.0))


def _change_point(x: Sequence[float], scale: float) -> tuple[int, float]:
    """Index where the new regime starts, and its standardised mean-difference statistic."""
    n = len(x)
    total = math.fsum(x)
    best_k, best = 0, 0.0
    left = 0.0
    for k in range(1, n):
        left += x[k - 1]
        if k < 2 or n - k < 2:
            continue
        diff = (total - left) / (n - k) - left / k
        stat = abs(diff) * math.sqrt(k * (n - k) / n) / scale
        if stat > best:
            best_k, best = k, stat
    return best_k, best


def _theil_sen(y: Sequence[float]) -> float:
    slopes = [
        (y[j] - y[i]) / (j - i) for i in range(len(y)) for j in range(i + 1, len(y))
    ]
    return _median(slopes) if slopes else 0.0


def attribute_onset(
    baseline: Sequence[float],
    observation: Sequence[float],
    direction: str = "up",
    min_share: float = 0.5,
    min_z: float = 3.0,
) -> Onset:
    """Whether the departure seen in ``observation`` began before the deploy (see module doc).

    ``direction`` is the bad one (``up`` or ``down``); a departure the other way is ``none``.
    Needs at least 6 baseline windows and one observation window, else ``none``.
    """
    b = [v for v in baseline if math.isfinite(v)]
    o = [v for v in observation if math.isfinite(v)]
    sign = 1.0 if direction == "up" else -1.0
    none = Onset("none", 0, 0.0, 0.0, "")
    if len(b) < 6 or not o:
        return none
    level = _median(b)
    scale = max(noise_unit(b), 1e-3 * abs(level), 1e-12)
    x = [sign * v for v in b + o]
    nb = len(b)
    shift = _shift(x, nb, scale, min_share, min_z)
    trend = _trend(x, nb, scale, min_share, min_z)
    if shift is not None and trend is not None:
        # Both fit: keep the one whose model (a step, or the baseline's line extended) leaves
        # the smaller absolute residuals over the whole series.
        return shift[0] if shift[1] <= trend[1] else trend[0]
    if shift is not None:
        return shift[0]
    if trend is not None:
        return trend[0]
    return none


def _shift(
    x: list[float], nb: int, scale: float, min_share: float, min_z: float
) -> tuple[Onset, float] | None:
    k, _ = _change_point(x, scale)
    if not 0 < k < nb:
        return None
    before = _median(x[:k])
    after = _median(x[k:])
    departure = _median(x[nb:]) - before
    pre = _median(x[k:nb]) - before
    z = pre / (scale * math.sqrt(1.0 / k + 1.0 / (nb - k)))
    if departure <= 0.0 or pre < min_share * departure or z < min_z:
        return None
    misfit = math.fsum(abs(v - before) for v in x[:k]) + math.fsum(abs(v - after) for v in x[k:])
    onset = Onset(
        "shift", nb - k, pre / departure, departure,
        f"level shift began {nb - k} windows before the deploy: {pre:.6g} of the "
        f"{departure:.6g} departure already in the baseline ({z:.1f} noise units)",
    )  # fmt: skip
    return onset, misfit


def _trend(
    x: list[float], nb: int, scale: float, min_share: float, min_z: float
) -> tuple[Onset, float] | None:
    b = x[:nb]
    slope = _theil_sen(b)
    departure = _median(x[nb:]) - _median(b)
    rise = slope * (nb - 1)
    if slope <= 0.0 or departure <= 0.0 or rise < min_z * scale:
        return None
    explained = slope * 0.5 * len(x)  # from the baseline's centre to the observation's
    if explained < min_share * departure:
        return None
    share = min(1.0, explained / departure)
    icpt = _median([v - slope * i for i, v in enumerate(b)])
    misfit = math.fsum(abs(v - icpt - slope * i) for i, v in enumerate(x))
    onset = Onset(
        "trend", 0, share, departure,
        f"trend under way before the deploy: {slope:.6g} per window over the baseline "
        f"({rise / scale:.1f} noise units) explains {share:.0%} of the {departure:.6g} departure",
    )  # fmt: skip
    return onset, misfit
