"""Event-time window arithmetic, the open-window aggregator and closed-window summaries.

Windows are tumbling, ``[k * width, (k + 1) * width)`` for integer ``k``, per service. While a
window is open it only collects raw samples (the hot path is one dict lookup and an append);
all statistics are computed once, when the window closes, into a compact, immutable
``WindowSummary``. A baseline is a handful of summaries folded into ``Baseline``.

>>> window_index(95.0, 30), window_bounds(3, 30)
(3, (90.0, 120.0))
>>> first_window_from(90.0, 30), first_window_from(91.0, 30)
(3, 4)
>>> acc = WindowAccumulator()
>>> for t, v in [(90.0, 1.0), (100.0, 3.0), (110.0, 2.0)]:
...     acc.add_sample("error_rate", "prom", None, t, v)
>>> s = summarize_window(3, 30, acc)
>>> s.metrics["error_rate"].mean, s.metrics["error_rate"].p95, s.metrics["error_rate"].count
(2.0, 3.0, 3)
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Literal

from rollguard.models.events import Alert

__all__ = [
    "Baseline",
    "BaselineMetric",
    "MetricStats",
    "SourceStats",
    "Stat",
    "StreamKey",
    "WindowAccumulator",
    "WindowSummary",
    "build_baseline",
    "first_window_from",
    "fold_metrics",
    "ordered_alerts",
    "percentile95",
    "stat_of",
    "summarize_window",
    "window_bounds",
    "window_end",
    "window_index",
    "windows_overlapping",
]

Stat = Literal["mean", "p95", "max"]
StreamKey = tuple[str, str, str | None]
"""(metric name, source, instance): one stream of samples."""


def window_index(ts: float, width: float) -> int:
    """Index ``k`` of the window ``[k * width, (k + 1) * width)`` that holds ``ts``.

    Floor division, not ``floor(ts / width)``: the rounded quotient can land on the next
    integer just below a boundary.
    """
    return int(ts // width)


def window_bounds(k: int, width: float) -> tuple[float, float]:
    """Start and end of window ``k``."""
    return (float(k * width), float((k + 1) * width))


def window_end(k: int, width: float) -> float:
    """End of window ``k`` (the event time at which it may close)."""
    return float((k + 1) * width)


def windows_overlapping(start: float, end: float, width: float) -> range:
    """Indices of the windows of ``width`` that overlap ``[start, end)``.

    >>> list(windows_overlapping(30.0, 90.0, 30)), list(windows_overlapping(45.0, 75.0, 30))
    ([1, 2], [1, 2])
    """
    return range(window_index(start, width), -window_index(-end, width))


def first_window_from(ts: float, width: float) -> int:
    """Index of the first window that starts at or after ``ts``."""
    return math.ceil(ts / width)


def percentile95(ordered: Sequence[float]) -> float:
    """Nearest-rank 95th percentile of an ascending, non-empty sequence.

    >>> percentile95([1.0, 2.0, 3.0]), percentile95([float(i) for i in range(1, 101)])
    (3.0, 95.0)
    """
    rank = math.ceil(0.95 * len(ordered))
    return ordered[max(rank, 1) - 1]


@dataclass(slots=True)
class WindowAccumulator:
    """What one open window of one service has collected so far: raw values and alerts.

    ``samples`` maps each stream to ``[newest ts, value, value, ...]``; keeping the newest time in
    slot 0 lets staleness be judged exactly without a second dict.
    """

    samples: dict[StreamKey, list[float]] = field(default_factory=dict)
    alerts: list[Alert] = field(default_factory=list)

    def add_sample(
        self, name: str, source: str, instance: str | None, ts: float, value: float
    ) -> None:
        """Collect one sample."""
        key = (name, source, instance)
        entry = self.samples.get(key)
        if entry is None:
            self.samples[key] = [ts, value]
        else:
            entry.append(value)
            if ts > entry[0]:
                entry[0] = ts


@dataclass(slots=True)
class SourceStats:
    """The statistics of one metric from one source within one window."""

    count: int
    mean: float
    p95: float
    max: float


@dataclass(slots=True)
class MetricStats:
    """One metric within one closed window, over all its sources and instances."""

    count: int
    mean: float
    p95: float
    max: float
    streams: int
    """Distinct (source, instance) streams that reported."""
    last_seen: Mapping[str, float]
    """Per source, the time of its newest sample in the window."""
    sources: Mapping[str, SourceStats] = field(default_factory=dict)
    """Per-source statistics, filled only when two or more sources reported."""


NO_SOURCES: Mapping[str, SourceStats] = {}
"""The ``sources`` of a metric with one source: one shared empty mapping, never written (typed
``Mapping``), instead of an empty dict per metric of each of the ~25 windows every service
keeps."""


def stat_of(stats: MetricStats | SourceStats, stat: Stat) -> float:
    """The window statistic that a metric's policy compares (``mean``, ``p95`` or ``max``)."""
    if stat == "mean":
        return stats.mean
    if stat == "p95":
        return stats.p95
    return stats.max


@dataclass(slots=True)
class WindowSummary:
    """A closed window of one service, folded into what later checks need.

    Built once when the window closes and never changed afterwards (not ``frozen`` only
    because frozen dataclasses cost several times more to build, on the hot path).
    """

    k: int
    start: float
    end: float
    metrics: Mapping[str, MetricStats]
    alerts: tuple[Alert, ...] = ()
    """The window's alert events in event-time order."""
    breaching: tuple[str, ...] = ()
    """Threshold metrics whose stat was above a limit in this window (set by the engine)."""
    learnable: bool = False
    """Outside every bake and without a breach: the anomaly models may learn from it."""

    def firing_by_severity(self) -> dict[str, int]:
        """Firing alert events in this window, counted by severity."""
        counts: dict[str, int] = {}
        for alert in self.alerts:
            if alert.status == "firing":
                counts[alert.severity] = counts.get(alert.severity, 0) + 1
        return dict(sorted(counts.items()))


def _stats(values: list[float]) -> tuple[int, float, float, float]:
    ordered = sorted(values)
    n = len(ordered)
    # Summing in sorted order makes the mean independent of arrival order.
    return n, sum(ordered) / n, ordered[max(math.ceil(0.95 * n), 1) - 1], ordered[-1]


_NAME = itemgetter(0)


def fold_metrics(acc: WindowAccumulator | None) -> dict[str, MetricStats]:
    """The statistics of every metric an open window collected (empty for no window)."""
    if acc is None or not acc.samples:
        return {}
    samples = acc.samples
    # The common case, one stream per metric: no grouping. Sorted by name only (instances
    # may be None), a metric with several streams shows up as a name already seen: group.
    single: dict[str, MetricStats] = {}
    for key in sorted(samples, key=_NAME):
        name = key[0]
        if name in single:
            break
        entry = samples[key]
        n, mean, p95, top = _stats(entry[1:])
        single[name] = MetricStats(n, mean, p95, top, 1, {key[1]: entry[0]}, NO_SOURCES)
    else:
        return single
    groups: dict[str, list[tuple[StreamKey, list[float]]]] = {}
    for key, entry in acc.samples.items():
        group = groups.get(key[0])
        if group is None:
            groups[key[0]] = [(key, entry)]
        else:
            group.append((key, entry))
    metrics: dict[str, MetricStats] = {}
    for name in sorted(groups):
        streams = groups[name]
        if len(streams) == 1:  # the common case: one exporter, one instance
            (_, source, _), entry = streams[0]
            n, mean, p95, top = _stats(entry[1:])
            metrics[name] = MetricStats(n, mean, p95, top, 1, {source: entry[0]}, NO_SOURCES)
            continue
        values: list[float] = []
        last_seen: dict[str, float] = {}
        per_source: dict[str, list[float]] = {}
        for (_, source, _), entry in sorted(streams, key=lambda s: (s[0][1], s[0][2] or "")):
            values.extend(entry[1:])
            per_source.setdefault(source, []).extend(entry[1:])
            if entry[0] > last_seen.get(source, -math.inf):
                last_seen[source] = entry[0]
        n, mean, p95, top = _stats(values)
        sources = (
            {src: SourceStats(*_stats(vals)) for src, vals in sorted(per_source.items())}
            if len(per_source) > 1
            else NO_SOURCES
        )
        metrics[name] = MetricStats(n, mean, p95, top, len(streams), last_seen, sources)
    return metrics


def ordered_alerts(acc: WindowAccumulator | None) -> tuple[Alert, ...]:
    """An open window's alert events in event-time order (ties broken by content)."""
    if acc is None or not acc.alerts:
        return ()
    return tuple(sorted(acc.alerts, key=lambda a: (a.ts, a.name, a.alert_id, a.status, a.severity)))


def summarize_window(k: int, width: float, acc: WindowAccumulator | None) -> WindowSummary:
    """Fold an open window into its summary (``acc`` None: an empty window)."""
    start, end = window_bounds(k, width)
    return WindowSummary(k, start, end, fold_metrics(acc), ordered_alerts(acc))


@dataclass(frozen=True, slots=True)
class BaselineMetric:
    """One metric over the baseline windows: the mean of each window stat, and its spread."""

    windows: int
    mean: float
    p95: float
    max: float
    cv: Mapping[str, float]
    """Coefficient of variation (population std / |mean|) of each window stat."""
    streams: int
    """Most distinct (source, instance) streams seen in any one baseline window."""
    sources: tuple[str, ...]

    def value(self, stat: Stat) -> float:
        """The baseline's value of ``stat``."""
        return self.mean if stat == "mean" else self.p95 if stat == "p95" else self.max


@dataclass(frozen=True, slots=True)
class Baseline:
    """The last closed windows before a deploy, folded per metric."""

    first_k: int
    last_k: int
    windows: int
    """Baseline windows that had any data."""
    metrics: Mapping[str, BaselineMetric]

    def stat(self, metric: str, stat: Stat) -> float | None:
        """The baseline value of ``metric``'s ``stat``, or None if it was never seen."""
        m = self.metrics.get(metric)
        return None if m is None else m.value(stat)


def _mean_cv(values: list[float]) -> tuple[float, float]:
    n = len(values)
    mean = math.fsum(values) / n
    var = math.fsum((v - mean) ** 2 for v in values) / n
    if mean == 0.0:
        return mean, 0.0 if var == 0.0 else math.inf
    return mean, math.sqrt(var) / abs(mean)


def build_baseline(summaries: Iterable[WindowSummary], first_k: int, last_k: int) -> Baseline:
    """Fold the summaries with ``first_k <= k <= last_k`` into a baseline."""
    chosen = [s for s in summaries if first_k <= s.k <= last_k and s.metrics]
    per_metric: dict[str, list[MetricStats]] = {}
    for summary in chosen:
        for name, stats in summary.metrics.items():
            per_metric.setdefault(name, []).append(stats)
    metrics: dict[str, BaselineMetric] = {}
    for name in sorted(per_metric):
        rows = per_metric[name]
        mean, cv_mean = _mean_cv([r.mean for r in rows])
        p95, cv_p95 = _mean_cv([r.p95 for r in rows])
        top, cv_max = _mean_cv([r.max for r in rows])
        sources = sorted({src for r in rows for src in r.last_seen})
        metrics[name] = BaselineMetric(
            windows=len(rows),
            mean=mean,
            p95=p95,
            max=top,
            cv={"mean": cv_mean, "p95": cv_p95, "max": cv_max},
            streams=max(r.streams for r in rows),
            sources=tuple(sources),
        )
    return Baseline(first_k, last_k, len(chosen), metrics)
