"""The evidence a ruling carries, built once from its ``Judgement`` and only for rulings.

Every judged window yields a ``Judgement``; most decide nothing. The audit trail of the few that
do is assembled here: the deciding windows, thresholds and streaks, the baseline, the
signal-quality figures, the anomaly scores and the observation so far (DESIGN §1, last
paragraph). Nothing here changes any state.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from rollguard.models.judgement import Judgement
from rollguard.models.policy import ServicePolicy
from rollguard.models.quality import Signals, baseline_cvs, coverage
from rollguard.models.records import At
from rollguard.models.trial import Deployment
from rollguard.models.windows import Baseline, WindowSummary, window_bounds

__all__ = ["trial_evidence"]


def trial_evidence(j: Judgement, dep: Deployment) -> dict[str, Any]:
    """The evidence of a ruling made on judgement ``j`` of deployment ``dep``."""
    sp, streaks = j.service_policy, j.streaks
    assert j.signals is not None
    return {
        "windows": _windows(dep.recent, sp, j.baseline),
        "thresholds": {
            name: {
                **check.as_evidence(),
                "breach_windows": streaks.breach.get(name, 0),
                "confirmed_windows": streaks.confirmed.get(name, 0),
            }
            for name, check in j.checks.items()
        },
        "consecutive_breach_windows": sp.consecutive_breach_windows,
        "baseline": _baseline(j.baseline, dep.width),
        "quality": _quality(j.signals, j.summary, sp, j.baseline),
        "anomaly": {
            "threshold": sp.anomaly_threshold,
            "scores": {
                key: {
                    "score": s.score,
                    "n_learned": s.n_learned,
                    "snapshot_id": s.snapshot_id,
                    "anomalous_windows": streaks.anomaly.get(key, 0),
                }
                for key, s in sorted(j.scores.items())
            },
        },
        "observation": {
            "windows": dep.windows_observed,
            "bake_until": At(dep.bake_until),
            "samples": dep.samples,
        },
    }


def _windows(
    summaries: Iterable[WindowSummary], sp: ServicePolicy, baseline: Baseline | None
) -> list[dict[str, Any]]:
    return [_window(s, sp, baseline) for s in summaries]


def _window(
    summary: WindowSummary, policy: ServicePolicy, baseline: Baseline | None
) -> dict[str, Any]:
    cov = coverage(summary, policy, baseline)
    metrics: dict[str, Any] = {}
    for name, s in sorted(summary.metrics.items()):
        item: dict[str, Any] = {
            "count": s.count,
            "mean": s.mean,
            "p95": s.p95,
            "max": s.max,
            "coverage": cov.get(name),
            "streams": s.streams,
        }
        if s.sources:
            item["sources"] = {
                src: {"count": x.count, "mean": x.mean, "p95": x.p95, "max": x.max}
                for src, x in s.sources.items()
            }
        metrics[name] = item
    for name in sorted(policy.metrics):
        metrics.setdefault(name, {"count": 0, "coverage": 0.0})
    return {
        "start": At(summary.start),
        "end": At(summary.end),
        "metrics": dict(sorted(metrics.items())),
        "alerts_firing": summary.firing_by_severity(),
    }


def _baseline(baseline: Baseline | None, width: int) -> dict[str, Any] | None:
    if baseline is None:
        return None
    start, _ = window_bounds(baseline.first_k, width)
    _, end = window_bounds(baseline.last_k, width)
    return {
        "from": At(start),
        "to": At(end),
        "windows": baseline.windows,
        "metrics": {
            name: {
                "windows": m.windows,
                "mean": m.mean,
                "p95": m.p95,
                "max": m.max,
                "cv": dict(m.cv),
                "streams": m.streams,
                "sources": list(m.sources),
            }
            for name, m in baseline.metrics.items()
        },
    }


def _quality(
    signals: Signals, summary: WindowSummary, sp: ServicePolicy, baseline: Baseline | None
) -> dict[str, Any]:
    return {
        "coverage": coverage(summary, sp, baseline),
        "coverage_span": signals.span,
        "min_coverage": sp.min_coverage,
        "stale_seconds": signals.stale,
        "stale_after_seconds": sp.stale_after_seconds,
        "alert_flips": signals.flips,
        "flap_limit": sp.flap_limit,
        "source_disagreements": signals.disagreements,
        "resolved_alerts": {name: At(ts) for name, ts in signals.resolved.items()},
        "traffic_drain": signals.drain,
        "models_learned": dict(sorted(signals.learned.items())),
        "min_baseline_windows": sp.min_baseline_windows,
        "baseline_cv": baseline_cvs(signals.breaching, sp, baseline),
        "max_baseline_cv": sp.max_baseline_cv,
        "traffic_mean": dict(sorted(signals.traffic_means.items())),
        "min_traffic": sp.min_traffic,
    }
