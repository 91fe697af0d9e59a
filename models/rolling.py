"""A rolling baseline's mean, compared without reading every value again (the idle close).

Each threshold metric keeps the policy stat of its last ``baseline_windows`` windows (a deque
of ~20 float objects, scattered in memory), and every idle window close asks whether the new
window's value is above ``ratio`` times their mean. Summing them at every close of every
service read ~20 cold objects per metric: the largest single cost of the idle close after
folding the samples. ``RunningSum`` keeps the sum as values come and go, with a bound on its
rounding error (relative to the exact sum, and the same for ``sum(past)``'s own rounding); a
comparison the bound cannot settle, a value within a few units in the last place of the
limit, is made on ``sum(past)`` as before. So every answer is bit for bit the one that
``value > ratio * (sum(past) / len(past))`` gives: the cache changes no decision.

>>> from collections import deque
>>> past = deque([100.0, 110.0, 90.0], maxlen=3)
>>> run = RunningSum(past)
>>> run.above(past, 2.0, 200.0), run.above(past, 2.0, 200.1)
(False, True)
>>> run.push(past, 130.0)  # drops 100.0: the mean is now 110
>>> run.above(past, 2.0, 220.0), run.above(past, 2.0, 220.0 + 1e-9)
(False, True)
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

__all__ = ["RunningSum"]

_U = 2.0**-53
"""The unit roundoff of a float: one operation's relative rounding error at most."""
_RESYNC = 1e-12
"""Sum again once the error bound passes this share of the sum of magnitudes."""


class RunningSum:
    """The sum of a rolling deque's values, kept as values are pushed (see the module doc).

    ``total`` is the running sum, ``mag`` the running sum of magnitudes, ``err`` a bound on
    ``|total - exact sum|``. A cache: rebuilt from the deque whenever it is missing.
    """

    __slots__ = ("total", "mag", "err")

    def __init__(self, values: Iterable[float]) -> None:
        self.total = self.mag = self.err = 0.0
        self.resync(values)

    def resync(self, values: Iterable[float]) -> None:
        """Sum ``values`` again (as ``sum`` does: its rounding is inside the bound)."""
        values = list(values)
        self.total = sum(values)
        self.mag = sum(abs(v) for v in values)
        self.err = len(values) * _U * self.mag

    def push(self, past: deque[float], value: float) -> None:
        """Append ``value`` to ``past`` (a deque with a ``maxlen``) and to the sum."""
        total, mag = self.total, self.mag
        if len(past) == past.maxlen:
            old = past[0]
            self.total = total + value - old
            self.mag = mag + abs(value) - abs(old)
            self.err += 2.0 * _U * (abs(total) + abs(value) + abs(old) + mag)
        else:
            self.total = total + value
            self.mag = mag + abs(value)
            self.err += _U * (abs(total) + abs(value) + mag)
        past.append(value)
        if self.err > _RESYNC * self.mag:
            self.resync(past)

    def above(self, past: deque[float], ratio: float, value: float) -> bool:
        """``value > ratio * (sum(past) / len(past))``, exactly (``past`` not empty)."""
        n = len(past)
        approx = ratio * (self.total / n)
        # |sum(past) - total| <= err + n u mag, then two roundings on each side; times 4.
        slack = 4.0 * abs(ratio) * (self.err + n * _U * self.mag) / n + 8.0 * _U * abs(approx)
        if value > approx + slack:
            return True
        if value <= approx - slack:
            return False
        self.resync(past)
        return value > ratio * (sum(past) / n)
