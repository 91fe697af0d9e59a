"""Shared pieces of the anomaly detectors: state round trip, a sliding quantile window, tails.

Everything here is pure arithmetic on plain Python data: no I/O, no clock, no randomness.
"""

from __future__ import annotations

import bisect
import hashlib
import inspect
import json
import math
from collections import deque
from typing import Any, ClassVar, Self

STATE_VERSION = 1
#: Inputs are clipped to this magnitude so that squares and sums of squares stay finite.
VALUE_LIMIT = 1e150
#: Smallest scale used anywhere; keeps every division finite.
TINY = 1e-300


def clip_value(v: float) -> float:
    """Clip a finite float into [-VALUE_LIMIT, VALUE_LIMIT]."""
    if v > VALUE_LIMIT:
        return VALUE_LIMIT
    if v < -VALUE_LIMIT:
        return -VALUE_LIMIT
    return v


def squash(z: float) -> float:
    """Logistic map of a finite, infinite or NaN evidence value into [0, 1] (NaN gives 0)."""
    if z != z:  # NaN: no usable evidence
        return 0.0
    if z > 40.0:
        return 1.0
    if z < -40.0:
        return 0.0
    return 1.0 / (1.0 + math.exp(-z))


def canonical_json(state: Any) -> str:
    """The one JSON text of a state: sorted keys, no spaces, finite numbers only."""
    return json.dumps(state, sort_keys=True, separators=(",", ":"), allow_nan=False)


class QuantileWindow:
    """The last ``size`` values, kept sorted too, for O(log n) lookup of any quantile.

    >>> w = QuantileWindow(3)
    >>> for v in (5.0, 1.0, 3.0, 4.0):
    ...     w.push(v)
    >>> w.quantile(0.5), len(w)
    (3.0, 3)
    """

    __slots__ = ("size", "order", "sorted")

    def __init__(self, size: int, values: list[float] | None = None) -> None:
        self.size = size
        self.order: deque[float] = deque(values or (), maxlen=size)
        self.sorted: list[float] = sorted(self.order)

    def __len__(self) -> int:
        return len(self.order)

    def push(self, v: float) -> None:
        order = self.order
        srt = self.sorted
        if len(order) == self.size:
            old = order[0]
            del srt[bisect.bisect_left(srt, old)]
        order.append(v)
        bisect.insort(srt, v)

    def quantile(self, q: float) -> float:
        """Linear-interpolated quantile; 0.0 when empty."""
        srt = self.sorted
        n = len(srt)
        if n == 0:
            return 0.0
        pos = q * (n - 1)
        i = int(pos)
        if i >= n - 1:
            return srt[-1]
        frac = pos - i
        return srt[i] + (srt[i + 1] - srt[i]) * frac

    def dump(self) -> list[float]:
        return list(self.order)


def t_two_sided_tail(t: float, dof: float) -> float:
    """P(|T| >= |t|) for Student's t with ``dof`` degrees of freedom."""
    t = abs(t)
    if t == math.inf:
        return 0.0
    x = dof / (dof + t * t)
    return regularized_beta(x, dof / 2.0, 0.5)


def f_tail(f: float, d1: float, d2: float) -> float:
    """P(F >= f) for the F distribution with (d1, d2) degrees of freedom."""
    if f <= 0.0:
        return 1.0
    if f == math.inf:
        return 0.0
    x = d2 / (d2 + d1 * f)
    return regularized_beta(x, d2 / 2.0, d1 / 2.0)


def regularized_beta(x: float, a: float, b: float) -> float:
    """I_x(a, b), by Lentz's continued fraction (Numerical Recipes ``betai``)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    ln_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(ln_front) * _beta_cf(x, a, b) / a
    return 1.0 - math.exp(ln_front) * _beta_cf(1.0 - x, b, a) / b


def _beta_cf(x: float, a: float, b: float) -> float:
    fpmin = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > fpmin else fpmin)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > fpmin else fpmin)
        c = 1.0 + aa / c
        c = c if abs(c) > fpmin else fpmin
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > fpmin else fpmin)
        c = 1.0 + aa / c
        c = c if abs(c) > fpmin else fpmin
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-12:
            break
    return h


def decades(p: float) -> float:
    """-log10 of a tail probability, finite for p == 0."""
    return -math.log10(max(p, 1e-300))


_PARAMETERS: dict[type, tuple[str, ...]] = {}


def _init_parameters(cls: type) -> tuple[str, ...]:
    """The constructor's parameter names of a detector class (read once per class: every
    judged window's scores name each detector's snapshot, ``StatefulDetector.snapshot_id``)."""
    names = _PARAMETERS.get(cls)
    if names is None:
        names = _PARAMETERS[cls] = tuple(inspect.signature(cls).parameters)
    return names


class StatefulDetector:
    """Mixin: exact JSON-safe state round trip and a short snapshot id.

    A subclass lists its learned state in ``_dump`` / ``_load``; ``None`` means "not built yet"
    (river's lazy state). The constructor arguments are read back from attributes of the same
    names, as river's ``_get_params`` does.
    """

    _kind: ClassVar[str]

    def _params(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _init_parameters(type(self))}

    def _dump(self) -> dict[str, Any] | None:
        raise NotImplementedError

    def _load(self, state: dict[str, Any]) -> None:
        raise NotImplementedError

    def to_state(self) -> dict[str, Any]:
        """JSON-safe plain data from which ``from_state`` rebuilds this detector exactly."""
        params = self._params()
        return {
            "kind": self._kind,
            "version": STATE_VERSION,
            "params": {k: list(v) if isinstance(v, tuple) else v for k, v in params.items()},
            "state": self._dump(),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Self:
        """Rebuild a detector from ``to_state`` output (also after a JSON round trip)."""
        if state.get("kind") != cls._kind:
            raise ValueError(f"state is for {state.get('kind')!r}, not {cls._kind!r}")
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"unsupported state version {state.get('version')!r}")
        obj = cls(**state["params"])
        if state["state"] is not None:
            obj._load(state["state"])
        return obj

    def snapshot_id(self) -> str:
        """First 12 hex digits of the sha256 of the canonical JSON state."""
        return hashlib.sha256(canonical_json(self.to_state()).encode()).hexdigest()[:12]
