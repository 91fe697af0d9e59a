"""Signal quality (DESIGN §5): is the telemetry of one service trustworthy at one window close?

Each check is a small pure function returning the offending items with their numbers;
``read_signals`` reads them all once for one closed window into ``Signals``, from which the
blocker rules of ``models.rules`` name the reason codes and ``models.evidence`` the figures.

Which checks look at which metrics (see docs/core.md):

- TELEMETRY_STALE: every (policy metric, source) seen in the baseline, up to the window's end.
- TELEMETRY_INCOMPLETE: every policy metric that is not stale, over the decision's span (this
  window and the ones before it that make up the decision: at least ``consecutive_breach_windows``
  and 2 windows, and at least ``SPAN_MIN_SAMPLES`` expected samples; see ``span_coverage``).
- ALERT_FLAPPING: every alert name of the service.
- SIGNALS_CONFLICT: breaching metrics against resolved alerts and a traffic drain; every policy
  metric for source disagreement.
- MODEL_COLD, BASELINE_UNSTABLE: the metrics breaching in this window.
- LOW_TRAFFIC: the traffic metrics' mean over the observation so far (the caller uses it only
  with a trigger or at the end of the bake).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rollguard.models.alerts import AlertBook
from rollguard.models.policy import ServicePolicy
from rollguard.models.windows import Baseline, WindowSummary, stat_of

__all__ = [
    "SPAN_MAX_WINDOWS",
    "SPAN_MIN_SAMPLES",
    "SPAN_MIN_WINDOWS",
    "TRAFFIC_DRAIN_RATIO",
    "Signals",
    "baseline_cvs",
    "baseline_instability",
    "cold_models",
    "coverage",
    "expected_samples",
    "flapping_alerts",
    "low_traffic",
    "read_signals",
    "relative_gap",
    "source_disagreements",
    "span_coverage",
    "span_windows",
    "stale_streams",
    "traffic_drain",
]

TRAFFIC_DRAIN_RATIO = 0.1
"""Traffic below this fraction of its baseline mean is a drain, not a bad release."""

SPAN_MIN_WINDOWS = 2
SPAN_MIN_SAMPLES = 6.0
SPAN_MAX_WINDOWS = 6
"""Completeness is judged over the span of windows a decision rests on, never over one window
alone: at least ``consecutive_breach_windows`` and ``SPAN_MIN_WINDOWS`` windows, widened until
``SPAN_MIN_SAMPLES`` samples are expected (at most ``SPAN_MAX_WINDOWS``). With 3 samples a
window, one window tolerates no loss at ``min_coverage`` 0.8; two windows tolerate one lost
scrape (5 of 6) and not two (4 of 6)."""


@dataclass(frozen=True, slots=True)
class Signals:
    """The signal-quality facts of one judged window, read once: the blocker rules
    (``models.rules``) and the evidence (``models.evidence``) both use them."""

    breaching: tuple[str, ...]
    """Threshold metrics breaching in this window (cold models and baselines are judged for
    them only)."""
    stale: Mapping[str, float]
    """``"metric/source"`` -> seconds without a sample (``stale_streams``)."""
    span: Mapping[str, Mapping[str, float]]
    """Coverage of every policy metric over the decision's span (``span_coverage``)."""
    flips: Mapping[str, int]
    """Alert name -> state flips in the flap window."""
    resolved: Mapping[str, float]
    """Alerts resolved in this or the previous window (only looked up while breaching)."""
    disagreements: Mapping[str, Mapping[str, Any]]
    """``source_disagreements``."""
    drain: Mapping[str, Mapping[str, float]]
    """``traffic_drain`` (only looked up while breaching)."""
    learned: Mapping[str, int]
    """Windows learned by the model of each breaching metric."""
    traffic_means: Mapping[str, float | None]
    """Mean of each traffic metric over the observation so far."""


def expected_samples(policy: ServicePolicy, metric: str, baseline: Baseline | None) -> float:
    """Samples one window should hold for ``metric``: per-stream rate x baseline streams."""
    interval = policy.metrics[metric].expected_interval_seconds
    seen = baseline.metrics.get(metric) if baseline is not None else None
    streams = max(1, seen.streams) if seen is not None else 1
    return policy.window_seconds / interval * streams


def coverage(
    summary: WindowSummary, policy: ServicePolicy, baseline: Baseline | None
) -> dict[str, float]:
    """Coverage (samples seen / expected) of every policy metric in one window."""
    out: dict[str, float] = {}
    for name in sorted(policy.metrics):
        stats = summary.metrics.get(name)
        count = stats.count if stats is not None else 0
        out[name] = count / expected_samples(policy, name, baseline)
    return out


def span_windows(policy: ServicePolicy, per_window: float) -> int:
    """How many windows the completeness of a metric expecting ``per_window`` samples a window
    is judged over (see ``SPAN_MIN_SAMPLES``)."""
    need = max(policy.consecutive_breach_windows, SPAN_MIN_WINDOWS)
    if per_window > 0.0:
        need = max(need, math.ceil(SPAN_MIN_SAMPLES / per_window - 1e-9))
    return min(need, max(policy.consecutive_breach_windows, SPAN_MAX_WINDOWS))


def span_coverage(
    span: Sequence[Mapping[str, int]], policy: ServicePolicy, baseline: Baseline | None
) -> dict[str, dict[str, float]]:
    """Coverage of every policy metric over the decision's span.

    ``span`` holds the sample count per metric of the latest observation windows, oldest first,
    the window being judged last. Per metric: ``coverage`` (samples / expected), ``samples``,
    ``expected`` and ``windows`` (how many of the newest windows were counted; fewer than the
    span when the observation is younger than it).
    """
    out: dict[str, dict[str, float]] = {}
    for name in sorted(policy.metrics):
        per_window = expected_samples(policy, name, baseline)
        take = min(len(span), span_windows(policy, per_window))
        seen = sum(span[i].get(name, 0) for i in range(len(span) - take, len(span)))
        expected = per_window * take
        out[name] = {
            "coverage": seen / expected if expected else 0.0,
            "samples": seen,
            "expected": expected,
            "windows": take,
        }
    return out


def stale_streams(
    last_seen: Mapping[tuple[str, str], float],
    baseline: Baseline | None,
    metrics: Mapping[str, object],
    at: float,
    stale_after: float,
) -> dict[str, float]:
    """``"metric/source"`` -> seconds without a sample, for baseline streams silent too long."""
    if baseline is None:
        return {}
    out: dict[str, float] = {}
    for name in sorted(metrics):
        seen = baseline.metrics.get(name)
        if seen is None:
            continue
        for source in seen.sources:
            gap = at - last_seen.get((name, source), -math.inf)
            if gap >= stale_after:
                out[f"{name}/{source}"] = gap
    return out


def flapping_alerts(book: AlertBook, at: float, window: float, limit: int) -> dict[str, int]:
    """Alert names with at least ``limit`` flips in the ``window`` seconds up to ``at``."""
    return {name: n for name, n in book.flips_since(at - window).items() if n >= limit}


def relative_gap(a: float, b: float) -> float:
    """|a - b| relative to the larger magnitude (0 when both are 0).

    >>> relative_gap(1.0, 2.0), relative_gap(0.0, 0.0)
    (0.5, 0.0)
    """
    scale = max(abs(a), abs(b))
    return 0.0 if scale == 0.0 else abs(a - b) / scale


def source_disagreements(
    summary: WindowSummary, policy: ServicePolicy
) -> dict[str, dict[str, Any]]:
    """Policy metrics whose sources disagree by more than ``source_tolerance`` (relative)."""
    out: dict[str, dict[str, Any]] = {}
    for name in sorted(policy.metrics):
        stats = summary.metrics.get(name)
        if stats is None or len(stats.sources) < 2:
            continue
        stat = policy.metrics[name].stat
        values = {src: stat_of(s, stat) for src, s in stats.sources.items()}
        gap = relative_gap(min(values.values()), max(values.values()))
        if gap > policy.source_tolerance:
            out[name] = {"stat": stat, "by_source": values, "relative_gap": gap}
    return out


def traffic_drain(
    summary: WindowSummary, policy: ServicePolicy, baseline: Baseline | None
) -> dict[str, dict[str, float]]:
    """Traffic metrics whose window mean fell below TRAFFIC_DRAIN_RATIO of the baseline mean."""
    out: dict[str, dict[str, float]] = {}
    if baseline is None:
        return out
    for name in sorted(policy.traffic_metrics()):
        stats = summary.metrics.get(name)
        base = baseline.stat(name, "mean")
        if stats is None or base is None or base <= 0.0:
            continue
        if stats.mean < TRAFFIC_DRAIN_RATIO * base:
            out[name] = {"mean": stats.mean, "baseline_mean": base}
    return out


def cold_models(
    metrics: tuple[str, ...], learned: Mapping[str, int], needed: int
) -> dict[str, int]:
    """Metrics whose detector learned fewer than ``needed`` windows -> windows learned."""
    return {m: learned.get(m, 0) for m in metrics if learned.get(m, 0) < needed}


def baseline_cvs(
    metrics: tuple[str, ...], policy: ServicePolicy, baseline: Baseline | None
) -> dict[str, float]:
    """The baseline CV of each metric's policy stat (for the evidence)."""
    out: dict[str, float] = {}
    for name in metrics:
        seen = baseline.metrics.get(name) if baseline is not None else None
        rule = policy.metrics.get(name)
        if seen is not None and rule is not None:
            out[name] = seen.cv[rule.stat]
    return out


def baseline_instability(
    metrics: tuple[str, ...], policy: ServicePolicy, baseline: Baseline | None
) -> dict[str, float]:
    """Threshold metrics whose baseline stat varies more than ``max_baseline_cv`` -> its CV."""
    cvs = baseline_cvs(metrics, policy, baseline)
    return {name: cv for name, cv in cvs.items() if cv > policy.max_baseline_cv}


def low_traffic(
    traffic_means: Mapping[str, float | None], min_traffic: float
) -> dict[str, float | None]:
    """Traffic metrics whose observed mean is below ``min_traffic`` (None: no samples at all)."""
    return {
        name: mean
        for name, mean in sorted(traffic_means.items())
        if mean is None or mean < min_traffic
    }


def read_signals(
    summary: WindowSummary,
    policy: ServicePolicy,
    baseline: Baseline | None,
    last_seen: Mapping[tuple[str, str], float],
    alerts: AlertBook,
    *,
    breaching: tuple[str, ...],
    learned: Mapping[str, int],
    traffic_means: Mapping[str, float | None],
    span: Sequence[Mapping[str, int]],
) -> Signals:
    """Read every signal-quality fact of one closed window of a service under trial, once.

    ``span``: sample counts per metric of the latest observation windows, oldest first, ending
    with this one (``span_coverage``).
    """
    at = summary.end
    return Signals(
        breaching=breaching,
        stale=stale_streams(last_seen, baseline, policy.metrics, at, policy.stale_after_seconds),
        span=span_coverage(span, policy, baseline),
        flips=alerts.flips_since(at - policy.flap_window_seconds),
        resolved=alerts.resolved_since(summary.start - policy.window_seconds) if breaching else {},
        disagreements=source_disagreements(summary, policy),
        drain=traffic_drain(summary, policy, baseline) if breaching else {},
        learned=learned,
        traffic_means=traffic_means,
    )
