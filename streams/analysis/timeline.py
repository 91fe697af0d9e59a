"""Per-deployment timelines for the report: window statistics recomputed from the input events.

Decision records only hold the windows that decided, so the report rebuilds every window of
the service around each deployment from the input metrics, with the core's own window code
(``models.windows``: the same accumulator, statistics and baseline fold). Thresholds come from
the policy; the baseline from the deployment's decision evidence when there is one, otherwise
recomputed over the same baseline windows (and marked so). Anomaly scores are the ones each
decision recorded: the core does not publish per-window scores, and the report does not
invent them.

Memory stays bounded on long ranges: a service keeps only the windows near its deployments and
the most recent baseline's worth.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from rollguard.models.events import Alert, DeployEvent, DeployStatus, MetricSample, parse_ts
from rollguard.models.policy import Policy, ServicePolicy
from rollguard.models.windows import (
    WindowAccumulator,
    WindowSummary,
    build_baseline,
    stat_of,
    summarize_window,
    window_end,
    window_index,
)
from rollguard.streams.analysis.labels import DeploymentOutcome

__all__ = [
    "AlertSpan",
    "DecisionMark",
    "DeploymentTimeline",
    "MetricSeries",
    "TimelineCollector",
    "build_timelines",
]

_MARGIN_WINDOWS = 6


@dataclass
class _ServiceTrack:
    width: int
    windows: dict[int, WindowAccumulator] = field(default_factory=dict)
    alerts: list[Alert] = field(default_factory=list)
    deploys: list[DeployEvent] = field(default_factory=list)
    keep: list[tuple[int, int]] = field(default_factory=list)
    newest_k: int | None = None


class TimelineCollector:
    """Taps the records replay feeds to the core; keeps what the timelines need."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.services: dict[str, _ServiceTrack] = {}

    def _track(self, service: str) -> _ServiceTrack:
        track = self.services.get(service)
        if track is None:
            width = self.policy.for_service(service).window_seconds
            track = self.services[service] = _ServiceTrack(width)
        return track

    def add(self, record: Any) -> None:
        """One valid input record, in the order replay processes them."""
        if isinstance(record, MetricSample):
            track = self._track(record.service)
            k = window_index(record.ts, track.width)
            acc = track.windows.get(k)
            if acc is None:
                acc = track.windows[k] = WindowAccumulator()
                if track.newest_k is None or k > track.newest_k:
                    track.newest_k = k
                    self._prune(record.service, track)
            acc.add_sample(record.name, record.source, record.instance, record.ts, record.value)
        elif isinstance(record, Alert):
            self._track(record.service).alerts.append(record)
        elif isinstance(record, DeployEvent) and record.status == DeployStatus.STARTED:
            track = self._track(record.service)
            track.deploys.append(record)
            sp = self.policy.for_service(record.service)
            k = window_index(record.ts, track.width)
            bake = int(sp.bake_seconds // track.width) + 1
            track.keep.append((k - sp.baseline_windows - _MARGIN_WINDOWS,
                               k + bake + 2 * sp.anomaly_only_windows + _MARGIN_WINDOWS))

    def _prune(self, service: str, track: _ServiceTrack) -> None:
        lookback = self.policy.for_service(service).baseline_windows + _MARGIN_WINDOWS
        if track.newest_k is None or len(track.windows) <= 4 * lookback:
            return
        floor = track.newest_k - lookback
        for k in [k for k in track.windows if k < floor]:
            if not any(lo <= k <= hi for lo, hi in track.keep):
                del track.windows[k]

    def summaries(self, service: str, first_k: int, last_k: int) -> list[WindowSummary]:
        """Closed-window summaries of ``service`` with ``first_k <= k <= last_k`` that had data."""
        track = self.services.get(service)
        if track is None:
            return []
        return [summarize_window(k, track.width, track.windows[k])
                for k in sorted(track.windows) if first_k <= k <= last_k]

    def deploy_event(self, deployment_id: str) -> DeployEvent | None:
        for track in self.services.values():
            for event in track.deploys:
                if event.deployment_id == deployment_id:
                    return event
        return None


@dataclass
class MetricSeries:
    """One metric's window statistic around a deployment, with its limits."""

    name: str
    stat: str
    role: str
    times: list[float]
    """Window ends, epoch seconds."""
    values: list[float]
    max: float | None = None
    ratio: float | None = None
    baseline: float | None = None
    baseline_recomputed: bool = False
    min_traffic: float | None = None

    @property
    def ratio_limit(self) -> float | None:
        if self.ratio is None or self.baseline is None:
            return None
        return self.ratio * self.baseline


@dataclass
class AlertSpan:
    """An alert name firing from ``start`` to ``end`` (None: still firing at the range end)."""

    name: str
    severity: str
    start: float
    end: float | None


@dataclass
class DecisionMark:
    """One decision on the timeline, with the anomaly scores it recorded."""

    ts: float
    action: str
    reasons: list[str]
    scores: dict[str, float]
    details: dict[str, str] = field(default_factory=dict)
    """Each reason's text, from the evidence."""


@dataclass
class DeploymentTimeline:
    """Everything one deployment's plot shows."""

    deployment_id: str
    service: str
    version: str
    deployed_at: float
    bake_until: float
    start: float
    end: float
    window_seconds: int
    action: str
    metrics: list[MetricSeries]
    alerts: list[AlertSpan]
    decisions: list[DecisionMark]
    anomaly_threshold: float
    late_events: int = 0
    final: DecisionMark | None = None
    """The decision that set ``action`` (None for ``none``)."""


def _alert_spans(alerts: Iterable[Alert], start: float, end: float) -> list[AlertSpan]:
    spans: list[AlertSpan] = []
    open_: dict[str, AlertSpan] = {}
    for alert in sorted(alerts, key=lambda a: (a.ts, a.name, a.status)):
        if alert.ts > end:
            break
        current = open_.get(alert.name)
        if alert.status == "firing" and current is None:
            open_[alert.name] = AlertSpan(alert.name, alert.severity, alert.ts, None)
        elif alert.status == "resolved" and current is not None:
            current.end = alert.ts
            spans.append(open_.pop(alert.name))
    spans.extend(open_.values())
    return [s for s in spans if s.end is None or s.end >= start]


def _marks(outcome: DeploymentOutcome | None) -> list[DecisionMark]:
    marks = []
    for decision in outcome.decisions if outcome else []:
        evidence = decision.get("evidence") or {}
        scores = evidence.get("anomaly", {}).get("scores", {})
        marks.append(DecisionMark(
            parse_ts(decision["ts"]), decision["action"], list(decision.get("reasons", [])),
            {name: float(s["score"]) for name, s in scores.items() if "score" in s},
            {code: str(text) for code, text in (evidence.get("details") or {}).items()},
        ))
    return marks


def _evidence_baselines(outcome: DeploymentOutcome | None) -> dict[str, float]:
    for decision in reversed(outcome.decisions if outcome else []):
        thresholds = (decision.get("evidence") or {}).get("thresholds") or {}
        found = {m: float(t["baseline"]) for m, t in thresholds.items()
                 if t.get("baseline") is not None}
        if found:
            return found
    return {}


def _series(collector: TimelineCollector, service: str, sp: ServicePolicy, first_k: int,
            last_k: int, deploy_k: int, evidence: Mapping[str, float]) -> list[MetricSeries]:
    summaries = collector.summaries(service, first_k, last_k)
    base_first, base_last = deploy_k - sp.baseline_windows, deploy_k - 1
    recomputed = build_baseline(summaries, base_first, base_last)
    out = []
    for name, rule in sorted(sp.metrics.items(), key=lambda kv: (kv[1].role != "threshold",
                                                                  kv[0])):
        # A window without the metric is a gap in the line (NaN), not a straight segment.
        present = {s.k: stat_of(s.metrics[name], rule.stat) for s in summaries
                   if name in s.metrics}
        ks = range(min(present), max(present) + 1) if present else range(0)
        ends = [window_end(k, sp.window_seconds) for k in ks]
        series = MetricSeries(name, rule.stat, rule.role, ends,
                              [present.get(k, math.nan) for k in ks])
        if rule.role == "threshold":
            series.max = rule.max
            series.ratio = rule.max_ratio_to_baseline
            if name in evidence:
                series.baseline = evidence[name]
            else:
                series.baseline = recomputed.stat(name, rule.stat)
                series.baseline_recomputed = series.baseline is not None
        else:
            series.baseline = recomputed.stat(name, rule.stat)
            series.baseline_recomputed = series.baseline is not None
            series.min_traffic = sp.min_traffic
        out.append(series)
    return out


def build_timelines(collector: TimelineCollector, outcomes: Mapping[str, DeploymentOutcome],
                    policy: Policy) -> list[DeploymentTimeline]:
    """One timeline per deployment seen (deploy event or decision), by deploy time."""
    idents: dict[str, tuple[str, str, float]] = {}
    for track_service, track in sorted(collector.services.items()):
        for event in track.deploys:
            idents.setdefault(event.deployment_id, (track_service, event.version, event.ts))
    for ident, seen in outcomes.items():
        if ident not in idents and seen.deployed_at is not None:
            deployment = (seen.decisions[0].get("evidence") or {}).get("deployment", {})
            idents[ident] = (seen.service, str(deployment.get("version", "?")), seen.deployed_at)
    timelines = []
    for ident, (service, version, deployed_at) in sorted(idents.items(),
                                                          key=lambda kv: (kv[1][2], kv[0])):
        sp = policy.for_service(service)
        width = collector.services[service].width if service in collector.services else (
            sp.window_seconds)
        outcome = outcomes.get(ident)
        marks = _marks(outcome)
        deploy_k = window_index(deployed_at, width)
        bake_until = deployed_at + sp.bake_seconds
        last_ts = max([bake_until, *(m.ts for m in marks)])
        first_k = deploy_k - sp.baseline_windows - 2
        last_k = window_index(last_ts, width) + 3
        alerts = collector.services[service].alerts if service in collector.services else []
        late = 0
        for decision in outcome.decisions if outcome else []:
            late += int((decision.get("evidence") or {}).get("late_events", 0) or 0)
        timelines.append(DeploymentTimeline(
            deployment_id=ident, service=service, version=version, deployed_at=deployed_at,
            bake_until=bake_until, start=first_k * width, end=(last_k + 1) * width,
            window_seconds=width,
            action=outcome.action if outcome else "none",
            metrics=_series(collector, service, sp, first_k, last_k, deploy_k,
                            _evidence_baselines(outcome)),
            alerts=_alert_spans(alerts, first_k * width, (last_k + 1) * width),
            decisions=marks, anomaly_threshold=sp.anomaly_threshold, late_events=late,
            final=next((m for m, d in zip(marks, outcome.decisions, strict=True)
                        if d is outcome.final), None) if outcome else None,
        ))
    return timelines
