"""Threshold checks (DESIGN §10): one window's policy stat against ``max`` and the baseline."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rollguard.models.policy import ServicePolicy
from rollguard.models.windows import MetricStats, Stat, stat_of

__all__ = [
    "ThresholdCheck",
    "ThresholdRule",
    "breach_text",
    "check_thresholds",
    "exceeds",
    "threshold_rules",
]


@dataclass(frozen=True, slots=True)
class ThresholdRule:
    """One threshold metric of a service's policy, flattened for the per-window check."""

    metric: str
    stat: Stat
    max: float | None
    max_ratio_to_baseline: float | None


@dataclass(frozen=True, slots=True)
class ThresholdCheck:
    """One threshold metric in one window against its limits."""

    stat: str
    value: float
    max: float | None
    max_ratio_to_baseline: float | None
    baseline: float | None
    breach: bool

    def as_evidence(self) -> dict[str, Any]:
        """Plain data for the audit trail."""
        limit_ratio = (
            self.max_ratio_to_baseline * self.baseline
            if self.max_ratio_to_baseline is not None and self.baseline is not None
            else None
        )
        return {
            "stat": self.stat,
            "value": self.value,
            "max": self.max,
            "max_ratio_to_baseline": self.max_ratio_to_baseline,
            "baseline": self.baseline,
            "ratio_limit": limit_ratio,
            "breach": self.breach,
        }


def threshold_rules(policy: ServicePolicy) -> tuple[ThresholdRule, ...]:
    """The threshold metrics of a service's policy, in name order."""
    return tuple(
        ThresholdRule(name, rule.stat, rule.max, rule.max_ratio_to_baseline)
        for name, rule in sorted(policy.metrics.items())
        if rule.role == "threshold"
    )


def exceeds(value: float, top: float | None, ratio: float | None, base: float | None) -> bool:
    """Whether a window stat is above ``max`` or above ``ratio`` x the baseline's value."""
    if top is not None and value > top:
        return True
    return ratio is not None and base is not None and value > ratio * base


def check_thresholds(
    metrics: Mapping[str, MetricStats],
    rules: tuple[ThresholdRule, ...],
    baseline_of: Mapping[str, float | None],
) -> dict[str, ThresholdCheck]:
    """Compare every threshold metric present in a window with ``max`` and the baseline ratio.

    ``baseline_of`` gives, per metric, the baseline value of the metric's policy stat.
    """
    out: dict[str, ThresholdCheck] = {}
    for rule in rules:
        stats = metrics.get(rule.metric)
        if stats is None:
            continue
        value = stat_of(stats, rule.stat)
        base = baseline_of.get(rule.metric)
        top, ratio = rule.max, rule.max_ratio_to_baseline
        out[rule.metric] = ThresholdCheck(
            rule.stat, value, top, ratio, base, exceeds(value, top, ratio, base)
        )
    return out


def breach_text(metric: str, check: ThresholdCheck, windows: int) -> str:
    """How a breaching metric is named in a THRESHOLD_BREACH detail."""
    limits = []
    if check.max is not None:
        limits.append(f"max {check.max:.6g}")
    if check.max_ratio_to_baseline is not None and check.baseline is not None:
        limits.append(f"{check.max_ratio_to_baseline:.6g} x baseline {check.baseline:.6g}")
    return (
        f"{metric} {check.stat} {check.value:.6g} above {' / '.join(limits)} for {windows} windows"
    )
