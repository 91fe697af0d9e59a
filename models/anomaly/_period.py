"""Online season-length estimation from the autocorrelation of a recent buffer."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt


def estimate_period(
    values: Sequence[float],
    min_period: int,
    max_period: int,
    min_acf: float = 0.15,
    min_prominence: float = 0.1,
    current: int = 0,
) -> int:
    """The dominant season length in ``values`` (0 when there is none).

    The series is detrended (least squares line) and winsorised (so one spike does not shape the
    estimate); the candidate is the autocorrelation peak of greatest height among lags in
    ``[min_period, max_period]`` that have at least 2.5 seasons of data, that reach ``min_acf``
    and that rise ``min_prominence`` above the lowest autocorrelation at a shorter lag. Among
    peaks nearly as high (90%), the shortest lag wins, so a period is preferred over its
    multiples, unless the ``current`` season length (+-5%) is among them: it is kept, so that
    the estimate does not flap.

    >>> import math
    >>> estimate_period([math.sin(2 * math.pi * i / 24) for i in range(500)], 4, 200)
    24
    >>> estimate_period([0.0] * 500, 4, 200)
    0
    """
    n = len(values)
    hi = min(max_period, int(n / 2.5))
    if hi < min_period or n < 16:
        return 0
    ac = _autocorrelation(values)
    if ac is None:
        return 0
    # White noise alone reaches ~3/sqrt(n) somewhere among many lags: demand more than that.
    min_acf = max(min_acf, 5.0 / float(np.sqrt(n)))
    seg = ac[: hi + 2]
    running_min = np.minimum.accumulate(seg)
    peaks: list[tuple[int, float]] = []
    for k in range(max(min_period, 2), hi + 1):
        a = float(seg[k])
        if (
            a >= min_acf
            and a >= float(seg[k - 1])
            and a >= float(seg[k + 1])
            and a - float(running_min[k]) >= min_prominence
        ):
            peaks.append((k, a))
    if not peaks:
        return 0
    best = max(a for _, a in peaks)
    good = [k for k, a in peaks if a >= 0.9 * best]
    tol = max(1, int(0.05 * current))
    if current and any(abs(k - current) <= tol for k in good):
        return current
    return min(good)


def _autocorrelation(values: Sequence[float]) -> npt.NDArray[np.float64] | None:
    """Unbiased autocorrelation of the detrended, winsorised series (None if it is flat)."""
    n = len(values)
    x = np.asarray(values, dtype=np.float64)
    t = np.arange(n, dtype=np.float64)
    tm = t.mean()
    slope = float(np.dot(t - tm, x - x.mean()) / np.dot(t - tm, t - tm))
    x = x - x.mean() - slope * (t - tm)
    med = float(np.median(x))
    mad = float(np.median(np.abs(x - med)))
    if mad > 0.0:
        x = np.clip(x, med - 8.0 * 1.4826 * mad, med + 8.0 * 1.4826 * mad)
    x = x - x.mean()
    peak = float(np.max(np.abs(x)))
    if not peak > 0.0:
        return None
    x = x / peak  # keeps the power spectrum finite for any finite input
    f = np.fft.rfft(x, 2 * n)
    ac = np.fft.irfft(f * np.conj(f))[:n]
    if not ac[0] > 0.0:
        return None
    scaled: npt.NDArray[np.float64] = ac / ac[0] * (n / (n - np.arange(n, dtype=np.float64)))
    return scaled
