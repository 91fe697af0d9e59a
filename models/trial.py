"""A deployment on trial: its baseline, its observation windows and what each one shows.

``Deployment`` is the mutable per-deployment state (streaks, bake totals, the request it may
have raised); ``Deployment.observe`` folds one closed observation window into it and returns the
``Findings`` that ``decide`` needs together with the evidence a decision must carry.

Windows relative to the deploy time ``t`` (width ``w``):

- baseline: the last ``baseline_windows`` windows that end at or before ``t``;
- the window that straddles ``t`` (if ``t`` is not on a boundary) is neither: it mixes the old
  and the new release;
- observation: windows that start at or after ``t`` and before ``t + bake_seconds``; the bake
  is extended, window by window, while a trigger episode is under way (at most
  ``consecutive_breach_windows - 1`` windows) so that a breach in the last window is judged.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from models.alerts import AlertBook
from models.decide import BakeEvidence, DeploymentFacts, Findings, Stage
from models.events import ReasonCode
from models.policy import ServicePolicy
from models.quality import SPAN_MAX_WINDOWS, assess, coverage, expected_samples
from models.records import At
from models.scoring import JOINT, Score
from models.windows import (
    Baseline,
    MetricStats,
    Stat,
    WindowSummary,
    first_window_from,
    stat_of,
)

__all__ = [
    "Deployment",
    "ThresholdCheck",
    "ThresholdRule",
    "check_thresholds",
    "exceeds",
    "threshold_rules",
]


@dataclass(slots=True)
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


ThresholdRule = tuple[str, Stat, float | None, float | None]
"""(metric, stat, max, max_ratio_to_baseline) of one threshold metric."""


def threshold_rules(policy: ServicePolicy) -> tuple[ThresholdRule, ...]:
    """The threshold metrics of a service's policy, flattened for the per-window check."""
    return tuple(
        (name, rule.stat, rule.max, rule.max_ratio_to_baseline)
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
    policy: ServicePolicy,
    baseline_of: Mapping[str, float | None],
) -> dict[str, ThresholdCheck]:
    """Compare every threshold metric present in a window with ``max`` and the baseline ratio.

    ``baseline_of`` gives, per metric, the baseline value of the metric's policy stat.
    """
    out: dict[str, ThresholdCheck] = {}
    for name, stat, top, ratio in threshold_rules(policy):
        stats = metrics.get(name)
        if stats is None:
            continue
        value = stat_of(stats, stat)
        base = baseline_of.get(name)
        out[name] = ThresholdCheck(stat, value, top, ratio, base, exceeds(value, top, ratio, base))
    return out


def _window_evidence(
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


def _baseline_evidence(baseline: Baseline | None, width: int) -> dict[str, Any] | None:
    if baseline is None:
        return None
    return {
        "from": At(baseline.first_k * width),
        "to": At((baseline.last_k + 1) * width),
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


@dataclass(slots=True)
class Deployment:
    """A release on trial and everything its decisions need to remember."""

    facts: DeploymentFacts
    width: int
    bake_until: float
    first_k: int
    stage: Stage = Stage.OBSERVING
    baseline: Baseline | None = None
    breach_streak: dict[str, int] = field(default_factory=dict)
    confirmed_streak: dict[str, int] = field(default_factory=dict)
    anomaly_streak: dict[str, int] = field(default_factory=dict)
    critical_streak: int = 0
    trigger_windows: int = 0
    """Observation windows so far in which some trigger was actionable."""
    clear_windows: int = 0
    windows_observed: int = 0
    samples: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    traffic_sum: dict[str, float] = field(default_factory=dict)
    traffic_n: dict[str, int] = field(default_factory=dict)
    recent: deque[dict[str, Any]] = field(default_factory=deque)
    """Evidence of the latest observation windows (the deciding ones)."""
    span: deque[dict[str, int]] = field(default_factory=deque)
    """Sample counts per metric of the latest observation windows (completeness is judged over
    them, not over one window: ``models.quality.span_coverage``)."""
    request_id: str | None = None
    request_expires_at: float | None = None
    request_reasons: tuple[str, ...] = ()
    due: tuple[dict[ReasonCode, str], bool, dict[ReasonCode, str]] | None = None
    """The latest actionable (triggers, confirmed, blockers): a request that waited for another
    trigger is made from them if the triggers clear while it waits (never dropped)."""

    @classmethod
    def open(cls, facts: DeploymentFacts, policy: ServicePolicy) -> Deployment:
        """Start the trial of a release deployed at ``facts.deployed_at``."""
        w = policy.window_seconds
        return cls(
            facts=facts,
            width=w,
            bake_until=facts.deployed_at + policy.bake_seconds,
            first_k=first_window_from(facts.deployed_at, w),
            recent=deque(maxlen=policy.consecutive_breach_windows),
            span=deque(maxlen=max(policy.consecutive_breach_windows, SPAN_MAX_WINDOWS)),
        )

    def baseline_range(self, policy: ServicePolicy) -> tuple[int, int]:
        """Indices of the first and last baseline window (those ending by the deploy)."""
        last = int(self.facts.deployed_at // self.width) - 1
        return last - policy.baseline_windows + 1, last

    def baseline_values(self, policy: ServicePolicy) -> dict[str, float | None]:
        """The baseline value of each threshold metric's policy stat."""
        base = self.baseline
        return {
            name: (base.stat(name, rule.stat) if base is not None else None)
            for name, rule in policy.threshold_metrics().items()
        }

    def traffic_means(self, policy: ServicePolicy) -> dict[str, float | None]:
        """Mean of each traffic metric over the observation so far (None: no samples)."""
        return {
            name: (
                self.traffic_sum[name] / self.traffic_n[name] if self.traffic_n.get(name) else None
            )
            for name in sorted(policy.traffic_metrics())
        }

    def _bake_evidence(self, policy: ServicePolicy) -> BakeEvidence:
        cov = {}
        for name in sorted(policy.threshold_metrics()):
            expected = self.windows_observed * expected_samples(policy, name, self.baseline)
            cov[name] = self.counts.get(name, 0) / expected if expected else 0.0
        return BakeEvidence(cov, self.traffic_means(policy), self.samples)

    def observe(
        self,
        summary: WindowSummary,
        checks: Mapping[str, ThresholdCheck],
        scores: Mapping[str, Score],
        policy: ServicePolicy,
        last_seen: Mapping[tuple[str, str], float],
        alerts: AlertBook,
    ) -> tuple[Findings, dict[str, Any]]:
        """Fold one observation window; return the findings and the evidence to decide on."""
        need = policy.consecutive_breach_windows
        threshold = policy.anomaly_threshold
        warm = policy.min_baseline_windows
        self.windows_observed += 1
        self.span.append({name: stats.count for name, stats in summary.metrics.items()})
        for name, stats in summary.metrics.items():
            self.samples += stats.count
            rule = policy.metrics.get(name)
            if rule is None:
                continue
            self.counts[name] = self.counts.get(name, 0) + stats.count
            if rule.role == "traffic":
                self.traffic_sum[name] = self.traffic_sum.get(name, 0.0) + stats.mean * stats.count
                self.traffic_n[name] = self.traffic_n.get(name, 0) + stats.count

        breaching = tuple(name for name, c in checks.items() if c.breach)
        for name in sorted(policy.threshold_metrics()):
            check = checks.get(name)
            s = scores.get(name)
            agrees = s is not None and s.n_learned >= warm and s.score >= threshold
            if check is not None and check.breach:
                self.breach_streak[name] = self.breach_streak.get(name, 0) + 1
                self.confirmed_streak[name] = (
                    self.confirmed_streak.get(name, 0) + 1 if agrees else 0
                )
            else:
                self.breach_streak[name] = 0
                self.confirmed_streak[name] = 0
        anomalous: list[str] = []
        traffic = policy.traffic_metrics()
        for key in sorted(set(scores) | set(self.anomaly_streak)):
            s = scores.get(key)
            # A cold model's score is not evidence of anything (docs/core.md), and neither is a
            # traffic level: traffic is the condition the service runs under (a daily cycle, a
            # drain), judged by LOW_TRAFFIC and the drain conflict, not a symptom of a release.
            if key in traffic:
                continue
            if s is not None and s.n_learned >= warm and s.score >= threshold:
                self.anomaly_streak[key] = self.anomaly_streak.get(key, 0) + 1
                anomalous.append(key)
            else:
                self.anomaly_streak[key] = 0
        critical = alerts.critical_during(summary.start)

        triggers: dict[ReasonCode, str] = {}
        episode: dict[ReasonCode, str] = {}
        breached = [m for m, n in sorted(self.breach_streak.items()) if n >= need]
        if breached:
            triggers[ReasonCode.THRESHOLD_BREACH] = "; ".join(
                _breach_text(m, checks[m], self.breach_streak[m]) for m in breached
            )
        starting = [m for m, n in sorted(self.breach_streak.items()) if 0 < n < need]
        if starting:
            episode[ReasonCode.THRESHOLD_BREACH] = "; ".join(
                f"{m} breached {self.breach_streak[m]} of {need} windows" for m in starting
            )
        self.critical_streak = self.critical_streak + 1 if critical else 0
        if self.critical_streak >= need:
            triggers[ReasonCode.CRITICAL_ALERT] = (
                f"critical alert firing for {self.critical_streak} windows: " + ", ".join(critical)
            )
        elif critical:
            episode[ReasonCode.CRITICAL_ALERT] = (
                f"critical alert firing {self.critical_streak} of {need} windows: "
                + ", ".join(critical)
            )
        # Beside a breach or a critical alert, an anomaly is part of the picture after the same
        # count; alone, a model departure must persist longer before it pages anyone.
        need_anomaly = need if triggers else policy.anomaly_only_windows
        anomalies = [k for k, n in sorted(self.anomaly_streak.items()) if n >= need_anomaly]
        if anomalies:
            triggers[ReasonCode.ANOMALY] = "; ".join(
                f"{k} score {scores[k].score:.6g} >= {threshold:.6g} for "
                f"{self.anomaly_streak[k]} windows"
                for k in anomalies
            )
        building = [k for k, n in sorted(self.anomaly_streak.items()) if 0 < n < need_anomaly]
        if building:
            episode[ReasonCode.ANOMALY] = "; ".join(
                f"{k} anomalous {self.anomaly_streak[k]} of {need_anomaly} windows"
                for k in building
            )
        self.trigger_windows += 1 if triggers else 0
        confirmed = any(self.confirmed_streak.get(m, 0) >= need for m in breached)

        learned = {k: s.n_learned for k, s in scores.items() if k != JOINT}
        quality = assess(
            summary,
            policy,
            self.baseline,
            last_seen,
            alerts,
            breaching=breaching,
            learned={m: learned.get(m, 0) for m in breaching},
            traffic_means=self.traffic_means(policy),
            span=self.span,
        )
        blockers = dict(quality.blockers)
        unconfirmed = [
            m
            for m in breached
            if self.confirmed_streak.get(m, 0) < need
            and scores.get(m) is not None
            and scores[m].n_learned >= warm
        ]
        if breached and not confirmed and unconfirmed:
            blockers[ReasonCode.BREACH_UNCONFIRMED] = "; ".join(
                f"{m} model score {scores[m].score:.6g} < {threshold:.6g} in a breaching window"
                if scores[m].score < threshold
                else f"{m} model agreed in only {self.confirmed_streak.get(m, 0)} of {need} windows"
                for m in unconfirmed
            )

        if triggers and not breached:
            # DESIGN §1.2 fails: no written threshold was crossed. Name it (every failed
            # condition is named), with what did depart.
            blockers[ReasonCode.BREACH_UNCONFIRMED] = _no_threshold_text(
                scores, anomalies, critical if ReasonCode.CRITICAL_ALERT in triggers else (), need
            )

        # A window only shows the breach has cleared if it saw the metrics that breached:
        # silence is missing evidence (stale telemetry), never a recovery.
        observed = all(
            summary.metrics.get(name) is not None and summary.metrics[name].count > 0
            for name in policy.threshold_metrics()
        )
        nothing = not breaching and not anomalous and not critical and observed
        self.clear_windows = self.clear_windows + 1 if nothing else 0
        bake_over = summary.end >= self.bake_until and not episode

        self.recent.append(_window_evidence(summary, policy, self.baseline))
        evidence: dict[str, Any] = {
            "windows": list(self.recent),
            "thresholds": {
                name: {
                    **check.as_evidence(),
                    "breach_windows": self.breach_streak.get(name, 0),
                    "confirmed_windows": self.confirmed_streak.get(name, 0),
                }
                for name, check in checks.items()
            },
            "consecutive_breach_windows": need,
            "baseline": _baseline_evidence(self.baseline, self.width),
            "quality": dict(quality.figures),
            "anomaly": {
                "threshold": threshold,
                "scores": {
                    key: {
                        "score": s.score,
                        "n_learned": s.n_learned,
                        "snapshot_id": s.snapshot_id,
                        "anomalous_windows": self.anomaly_streak.get(key, 0),
                    }
                    for key, s in sorted(scores.items())
                },
            },
            "observation": {
                "windows": self.windows_observed,
                "bake_until": At(self.bake_until),
                "samples": self.samples,
            },
        }
        # A request due but waiting for another trigger is never dropped (DESIGN §1, issue 11):
        # if the triggers clear while it waits, it is made as it was due.
        if triggers:
            self.due = (dict(triggers), confirmed, dict(blockers))
        elif (due := getattr(self, "due", None)) is not None and self.trigger_windows < need:
            was, confirmed, held = due  # (getattr: a checkpoint from before the field)
            triggers = {code: f"{text} (the window before)" for code, text in was.items()}
            blockers = {**held, **blockers}
            self.trigger_windows += 1
        findings = Findings(
            triggers=triggers,
            confirmed=confirmed,
            blockers=blockers,
            episode=episode,
            clear_windows=self.clear_windows,
            trigger_windows=self.trigger_windows,
            bake_over=bake_over,
            bake=self._bake_evidence(policy) if bake_over else None,
        )
        return findings, evidence


def _no_threshold_text(
    scores: Mapping[str, Score], anomalies: list[str], critical: tuple[str, ...], need: int
) -> str:
    """Why a trigger without a threshold breach cannot be automated (DESIGN §1.2)."""
    what = []
    if anomalies:
        shown = ", ".join(f"{scores[k].score:.2f} on {k}" for k in anomalies)
        what.append(f"model departure (score {shown})")
    if critical:
        what.append(f"critical alert {', '.join(critical)}")
    return (
        f"{' and '.join(what) or 'a trigger'} but no written threshold crossed "
        f"for {need} consecutive windows"
    )


def _breach_text(metric: str, check: ThresholdCheck, windows: int) -> str:
    limits = []
    if check.max is not None:
        limits.append(f"max {check.max:.6g}")
    if check.max_ratio_to_baseline is not None and check.baseline is not None:
        limits.append(f"{check.max_ratio_to_baseline:.6g} x baseline {check.baseline:.6g}")
    return (
        f"{metric} {check.stat} {check.value:.6g} above {' / '.join(limits)} for {windows} windows"
    )
