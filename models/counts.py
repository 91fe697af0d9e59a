"""Counts, not ratios: is an error-rate window's excess supported by its request count?

At a few requests per second two errors in a window are "3x the baseline". A ratio means
something only with the count behind it: ``error_count_test`` asks the exact binomial question
"how likely are at least this many errors in this many requests if the release changed
nothing (the baseline rate)?", and first whether the window *could* tell: if even an error
rate at the policy's limit would not be significant with this many requests, the window is
``low_traffic`` evidence, not a breach.

>>> error_count_test(0.015, requests=90, baseline_rate=0.005, limit_rate=0.015).verdict
'low_traffic'
>>> error_count_test(0.1, requests=3000, baseline_rate=0.005, limit_rate=0.015).verdict
'breach'
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from rollguard.models.anomaly._base import regularized_beta

__all__ = ["CountEvidence", "binomial_sf", "error_count_test"]


def binomial_sf(k: float, n: float, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p); ``k`` and ``n`` may be non-integers (beta form).

    >>> round(binomial_sf(2, 2, 0.5), 6)
    0.25
    """
    if k <= 0.0:
        return 1.0
    if k > n or p <= 0.0:
        return 0.0
    if p >= 1.0:
        return 1.0
    return regularized_beta(p, k, n - k + 1.0)


@dataclass(frozen=True, slots=True)
class CountEvidence:
    """The count test of one window.

    ``verdict``: ``breach`` (above the limit, and so, given the request count, significantly
    above the baseline rate), ``within`` (not above the limit) or ``low_traffic`` (too few
    requests: even a rate at the limit would not be significant). ``p_value``: P(at least
    ``errors`` errors | ``requests``, baseline rate); ``p_at_limit``: the same for an error
    rate exactly at the limit.
    """

    verdict: str
    errors: int
    requests: int
    baseline_rate: float
    limit_rate: float
    p_value: float
    p_at_limit: float
    detail: str


def error_count_test(
    error_rate: float,
    requests: float,
    baseline_rate: float,
    limit_rate: float,
    alpha: float = 1e-3,
    rate_floor: float = 1e-4,
) -> CountEvidence:
    """Binomial test of a window's errors against the baseline rate, given its requests.

    ``requests``: requests in the window (traffic rate x window seconds); the error count is
    ``round(error_rate * requests)``. The baseline rate is floored at ``rate_floor`` (a clean
    baseline does not make one error a certainty of regression).
    """
    n = max(0, int(round(requests))) if math.isfinite(requests) else 0
    rate = error_rate if math.isfinite(error_rate) else 0.0
    errors = int(round(max(0.0, rate) * n))
    p0 = min(1.0, max(baseline_rate if math.isfinite(baseline_rate) else 0.0, rate_floor))
    at_limit = binomial_sf(math.ceil(limit_rate * n), n, p0) if n else 1.0
    p = binomial_sf(errors, n, p0) if n else 1.0
    if n == 0 or at_limit >= alpha:
        verdict = "low_traffic"
        detail = (
            f"{n} requests: even {limit_rate:.3g} errors per request would not be "
            f"distinguishable from the baseline {p0:.3g} (p {at_limit:.2g} >= {alpha:.2g})"
        )
    elif rate <= limit_rate or p >= alpha:  # (p >= alpha above the limit: rounding only)
        verdict, detail = "within", f"{errors}/{n} errors, within the limit {limit_rate:.3g}"
    else:
        verdict = "breach"
        detail = f"{errors}/{n} errors against a baseline of {p0:.3g}: p {p:.2g} < {alpha:.2g}"
    return CountEvidence(verdict, errors, n, p0, limit_rate, p, at_limit, detail)
