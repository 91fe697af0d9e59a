"""An accumulating, anytime-valid sequential test per metric over the bake.

Judging each window on its own against a fixed score, and counting only unbroken runs, lets a
sustained moderate regression on a noisy series slip through (it never holds four windows in a
row). ``SequentialTest`` accumulates the evidence of every observation window instead: a
one-sided mixture sequential probability ratio test (mSPRT, the "always valid p-value" of
online experiments and canary analysis) of H0 "the metric's mean is at most the baseline's
plus ``margin``" on window values standardised by the baseline's spread and clipped at
``clip`` (a lone spike adds at most ``clip`` units). With a N(0, tau²) mixture over the shift,

    log L_n = -0.5 log(1 + n tau²) + tau² S_n² / (2 (1 + n tau²)),   S_n = sum of the n values,

and the test alarms the first time ``S_n > 0`` and ``L_n >= 1 / alpha``. By Ville's inequality
the probability of *ever* alarming under H0 is at most ``alpha``, however many windows are
looked at (for independent windows with unit variance; clipping only lowers the variance).

>>> t = SequentialTest.from_baseline([200.0, 210.0, 190.0, 205.0, 195.0, 200.0])
>>> [t.update(v).alarm for v in (300.0, 310.0, 290.0)]
[False, True, True]
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["SequentialTest", "SequentialVerdict"]

STATE_VERSION = 1


@dataclass(frozen=True, slots=True)
class SequentialVerdict:
    """After one window: the log likelihood ratio, the threshold ``log(1/alpha)``, whether the
    test has alarmed (it stays alarmed), the windows seen and the mean standardised excess."""

    log_lr: float
    threshold: float
    alarm: bool
    windows: int
    mean_excess: float


def _median(values: Sequence[float]) -> float:
    s = sorted(values)
    n = len(s)
    return s[n // 2] if n % 2 else 0.5 * (s[n // 2 - 1] + s[n // 2])


class SequentialTest:
    """One-sided mSPRT of "worse than the baseline by more than ``margin``" (module doc).

    Parameters
    ----------
    reference
        The baseline level (e.g. the median of the baseline windows).
    scale
        The spread of a healthy window's value around it (one noise unit).
    direction
        ``"up"`` (bigger is worse) or ``"down"``.
    alpha
        Bound on the probability of ever alarming on a healthy release.
    tau
        Standard deviation of the mixture over shifts, in noise units (the shift sizes the
        test is most sensitive to).
    margin
        Relative change tolerated as healthy (0.1: the mean may be 10 % worse).
    clip
        Standardised window values are clipped to [-clip, clip].
    """

    def __init__(
        self,
        reference: float,
        scale: float,
        direction: str = "up",
        alpha: float = 0.01,
        tau: float = 1.0,
        margin: float = 0.1,
        clip: float = 3.0,
    ) -> None:
        if direction not in ("up", "down"):
            raise ValueError(f"direction must be 'up' or 'down', not {direction!r}")
        if not (0.0 < alpha < 1.0) or scale <= 0.0 or tau <= 0.0:
            raise ValueError("need 0 < alpha < 1, scale > 0 and tau > 0")
        self.reference = reference
        self.scale = scale
        self.direction = direction
        self.alpha = alpha
        self.tau = tau
        self.margin = margin
        self.clip = clip
        self._n = 0
        self._sum = 0.0
        self._alarm = False

    @classmethod
    def from_baseline(
        cls, baseline: Sequence[float], rel_floor: float = 0.05, **kwargs: Any
    ) -> SequentialTest:
        """A test against the baseline windows' median, with their robust spread as the unit
        (1.4826 MAD, floored at ``rel_floor`` x the median)."""
        vals = [v for v in baseline if math.isfinite(v)]
        if not vals:
            raise ValueError("an empty baseline")
        med = _median(vals)
        mad = 1.4826 * _median([abs(v - med) for v in vals])
        return cls(med, max(mad, rel_floor * abs(med), 1e-12), **kwargs)

    def _bound(self) -> float:
        shift = self.margin * abs(self.reference)
        return self.reference + shift if self.direction == "up" else self.reference - shift

    def update(self, value: float) -> SequentialVerdict:
        """Fold one observation window's value (non-finite: the window counts for nothing)."""
        if math.isfinite(value):
            z = (value - self._bound()) / self.scale
            z = z if self.direction == "up" else -z
            self._sum += max(-self.clip, min(self.clip, z))
            self._n += 1
        return self.verdict()

    def verdict(self) -> SequentialVerdict:
        """The test's state now (see ``SequentialVerdict``)."""
        n, s, t2 = self._n, self._sum, self.tau * self.tau
        log_lr = -0.5 * math.log1p(n * t2) + t2 * s * s / (2.0 * (1.0 + n * t2)) if n else 0.0
        threshold = math.log(1.0 / self.alpha)
        if s > 0.0 and log_lr >= threshold:
            self._alarm = True
        return SequentialVerdict(log_lr, threshold, self._alarm, n, s / n if n else 0.0)

    def to_state(self) -> dict[str, Any]:
        """JSON-safe plain data; ``from_state`` rebuilds the test exactly."""
        return {
            "kind": "SequentialTest",
            "version": STATE_VERSION,
            "params": {
                "reference": self.reference, "scale": self.scale, "direction": self.direction,
                "alpha": self.alpha, "tau": self.tau, "margin": self.margin, "clip": self.clip,
            },
            "state": {"n": self._n, "sum": self._sum, "alarm": self._alarm},
        }  # fmt: skip

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> SequentialTest:
        """Rebuild from ``to_state`` output."""
        if state.get("kind") != "SequentialTest" or state.get("version") != STATE_VERSION:
            raise ValueError(f"not a SequentialTest state: {state.get('kind')!r}")
        obj = cls(**state["params"])
        obj._n = int(state["state"]["n"])
        obj._sum = float(state["state"]["sum"])
        obj._alarm = bool(state["state"]["alarm"])
        return obj
