"""Foreign metric points → ``MetricSample`` records: rates, ratios and percentiles.

A ``Point`` is one data point already matched to a rule (``streams.ingest.mapping``). A
``SampleBuilder`` turns the points of one message (or one remote-write request) into samples.
It keeps the last value of every cumulative series, so it must see the points of a series in
event-time order (the worker hands it what the event-time merger released).

- Gauge: the value × scale.
- Delta sum: value / (time − start time).
- Cumulative sum: (value − previous) / (time − previous time). A reset — the value went down,
  or the start time moved — restarts from the new start time when it is known, else the point
  only primes. A series seen for the first time in a group that already had points (a status
  code's first error) counts from zero at the group's previous time, so the first errors are
  not lost.
- Explicit-bucket histogram: the bucket counts of the interval (delta points as they are,
  cumulative ones minus the previous point), summed over the selected series at one time; the
  percentile is interpolated linearly inside the bucket that holds its rank, the way Prometheus'
  ``histogram_quantile`` does. Accuracy: the true percentile lies in the same bucket, so the
  error is at most that bucket's width (the lowest bucket starts at the point's ``min`` or 0;
  the overflow bucket ends at its ``max`` or, unknown, at the highest bound).
- A point flagged "no recorded value" (OTLP) or a staleness marker (Prometheus) is no sample,
  never zero, and forgets the series' previous value.
- An interval with no traffic gives no ratio and no percentile (missing, not zero).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from operator import attrgetter
from typing import Any, Literal, NamedTuple

from rollguard.models.events import MetricSample
from rollguard.streams.ingest.mapping import MetricRule

__all__ = ["Kind", "Point", "SampleBuilder", "percentile"]

# pydantic-core types validate_python's result as Any; here it is always a MetricSample.
_VALIDATE: Callable[[dict[str, object]], MetricSample] = (
    MetricSample.__pydantic_validator__.validate_python
)

Kind = Literal["gauge", "delta", "cumulative", "histogram_delta", "histogram_cumulative"]


class Point(NamedTuple):
    """One foreign data point matched to ``rule`` (times in epoch seconds); a tuple, the
    cheapest record Python builds (one per data point)."""

    service: str
    instance: str | None
    rule: MetricRule
    kind: Kind
    series: tuple[object, ...]
    """Identity of the series (metric, attributes, resource) for cumulative state."""
    ts: float
    start: float | None = None
    value: float | None = None
    counts: tuple[float, ...] = ()
    bounds: tuple[float, ...] = ()
    low: float | None = None
    high: float | None = None
    attributes: dict[str, str] | None = None
    missing: bool = False


def percentile(p: float, counts: tuple[float, ...], bounds: tuple[float, ...],
               low: float | None = None, high: float | None = None) -> float | None:
    """The ``p``-th percentile of an explicit-bucket histogram, interpolated in its bucket.

    >>> percentile(50, (0, 10, 0), (1.0, 2.0))   # all ten in (1, 2]
    1.5
    >>> percentile(99, (0, 0, 0), (1.0, 2.0)) is None
    True
    """
    total = sum(counts)
    if total <= 0 or len(counts) != len(bounds) + 1:
        return None
    rank = p / 100.0 * total
    seen = 0.0
    for i, count in enumerate(counts):
        if count > 0 and seen + count >= rank:
            if i > 0:
                lower = bounds[i - 1]
            else:
                lower = low if low is not None else min(0.0, bounds[0] if bounds else 0.0)
            if i < len(bounds):
                upper = bounds[i]
            else:
                upper = high if high is not None and high > lower else lower
            return lower + (upper - lower) * (rank - seen) / count
        seen += count
    return bounds[-1] if bounds else None


_Group = tuple[str, str | None, str, int, float]  # service, instance, metric, rule id, ts


@dataclass(slots=True)
class _Histogram:
    """The interval counts of one group, summed over its series, with their common bounds."""

    counts: list[float]
    bounds: tuple[float, ...]
    low: float | None
    high: float | None


class SampleBuilder:
    """Stateful converter of points to samples (see module doc)."""

    def __init__(self, source: str) -> None:
        self.source = source
        self._last: dict[tuple[object, ...], tuple[float | None, float, object]] = {}
        self._group_ts: dict[tuple[object, ...], tuple[float | None, float | None]] = {}
        self._keys: dict[int, tuple[MetricRule, tuple[object, ...]]] = {}
        self.missing = 0
        """Points that carried no value (no recorded value, staleness markers)."""
        self._snapshot: dict[str, list[Any]] | None = None

    def _key(self, rule: MetricRule) -> tuple[object, ...]:
        """A rule's identity by content (two equal configurations share state)."""
        held = self._keys.get(id(rule))
        if held is None or held[0] is not rule:
            key = (rule.source, rule.metric, rule.kind, tuple(sorted(rule.where.items())),
                   tuple(sorted((rule.errors_where or {}).items())), rule.percentile)
            held = self._keys[id(rule)] = (rule, key)
        return held[1]

    def forget(self) -> None:
        """Drop every series' previous value."""
        self._last.clear()
        self._group_ts.clear()
        self._snapshot = None

    def snapshot(self) -> dict[str, list[Any]]:
        """The previous values as plain data (JSON: tuples become lists), for a checkpoint."""
        if self._snapshot is None:  # made again only after points came
            self._snapshot = {"last": [[key, value] for key, value in self._last.items()],
                              "groups": [[key, value] for key, value in self._group_ts.items()]}
        return self._snapshot

    def restore(self, data: object) -> None:
        """Take the previous values of ``snapshot`` (after a JSON round trip); ValueError if
        ``data`` is not such a snapshot (nothing is taken then)."""
        if type(data) is not dict or set(data) != {"last", "groups"}:
            raise ValueError("OTLP rate state: not a snapshot")
        last: dict[tuple[object, ...], tuple[float | None, float, object]] = {}
        groups: dict[tuple[object, ...], tuple[float | None, float | None]] = {}
        for entry in data["last"]:
            key, (start, ts, value) = _plain(entry)
            held: object = (tuple(map(_float, value)) if type(value) is tuple
                            and all(map(_number, value)) else _float(value)
                            if _number(value) else None)
            if not (_number(start, True) and _number(ts)) or held is None:
                raise ValueError(f"OTLP rate state: bad entry {entry!r:.200}")
            last[key] = (_float(start), float(ts), held)  # type: ignore[arg-type]
        for entry in data["groups"]:
            key, (latest, before) = _plain(entry)
            if not (_number(latest, True) and _number(before, True)):
                raise ValueError(f"OTLP rate state: bad group {entry!r:.200}")
            groups[key] = (_float(latest), _float(before))
        self._last, self._group_ts = last, groups
        self._snapshot = None

    def samples(self, points: list[Point]) -> list[MetricSample]:
        """The samples of ``points`` (several series, services and times), oldest first."""
        if points:
            self._snapshot = None
        out: list[MetricSample] = []
        rates: dict[_Group, list[float]] = defaultdict(lambda: [0.0, 0.0])
        hists: dict[_Group, _Histogram] = {}
        rule_of: dict[int, MetricRule] = {}
        for point in sorted(points, key=_TS):
            rule = point.rule
            if point.missing:
                self.missing += 1
                self._last.pop((self._key(rule), point.series), None)
                continue
            if point.kind == "gauge":
                value = point.value
                if value is not None and math.isfinite(value):
                    out.append(_VALIDATE({"service": point.service, "name": rule.metric,
                                          "value": value * rule.scale, "ts": point.ts,
                                          "source": self.source, "instance": point.instance}))
                continue
            group = (point.service, point.instance, rule.metric, id(rule), point.ts)
            rule_of[id(rule)] = rule
            if point.kind in ("delta", "cumulative"):
                rate = self._rate(point)
                if rate is None:
                    continue
                acc = rates[group]
                acc[0] += rate
                if rule.errors_where is not None and rule.is_error(point.attributes or {}):
                    acc[1] += rate
                continue
            counts = self._interval_counts(point)
            if counts is None:
                continue
            held = hists.get(group)
            if held is None:
                hists[group] = _Histogram(list(counts), point.bounds, point.low, point.high)
            elif held.bounds == point.bounds:
                merged = held.counts
                for i, c in enumerate(counts):
                    merged[i] += c
                held.low = _opt(min, held.low, point.low)
                held.high = _opt(max, held.high, point.high)
        for (service, instance, metric, rule_id, ts), (total, errors) in rates.items():
            rule = rule_of[rule_id]
            if rule.errors_where is not None:
                if total <= 0:
                    continue  # no traffic: an error ratio is undefined, not zero
                value = errors / total
            else:
                value = total
            out.append(self._sample(service, instance, metric, value * rule.scale, ts))
        for (service, instance, metric, rule_id, ts), held in hists.items():
            rule = rule_of[rule_id]
            assert rule.percentile is not None
            found = percentile(rule.percentile, tuple(held.counts), held.bounds, held.low,
                               held.high)
            if found is not None:
                out.append(self._sample(service, instance, metric, found * rule.scale, ts))
        if rates or hists:
            out.sort(key=_TS)  # gauges alone are in order already
        return out

    def _sample(self, service: str, instance: str | None, name: str, value: float,
                ts: float) -> MetricSample:
        # The validator called directly: what MetricSample(...) does, at half the cost.
        return _VALIDATE({"service": service, "name": name, "value": value, "ts": ts,
                          "source": self.source, "instance": instance})

    def _previous(self, point: Point) -> tuple[float | None, float, object] | None:
        """The series' previous (start, time, value); a new series of a known group starts
        from zero at the group's previous time."""
        group = (point.service, point.instance, self._key(point.rule))
        latest, before = self._group_ts.get(group, (None, None))
        if latest is None or point.ts > latest:
            self._group_ts[group] = (point.ts, latest)
            before = latest
        previous = self._last.get((self._key(point.rule), point.series))
        if previous is None and before is not None and before < point.ts:
            zero: object = 0.0 if point.kind == "cumulative" else (0.0,) * len(point.counts)
            return (point.start, before, zero)
        return previous

    def _rate(self, point: Point) -> float | None:
        value = point.value
        if value is None or not math.isfinite(value):
            return None
        if point.kind == "delta":
            if point.start is None or point.ts <= point.start:
                return None
            return value / (point.ts - point.start)
        previous = self._previous(point)
        self._last[(self._key(point.rule), point.series)] = (point.start, point.ts, value)
        if previous is None:
            return None
        start, ts, before = previous
        assert isinstance(before, float)
        if point.ts <= ts:
            return None
        if value >= before and (point.start is None or start is None or point.start == start
                                or point.start <= ts):
            return (value - before) / (point.ts - ts)
        # Reset: what the series counted since its new start is the interval's only if that
        # start is after the previous point; otherwise this point only primes.
        if point.start is not None and ts <= point.start < point.ts:
            return value / (point.ts - point.start)
        return None

    def _interval_counts(self, point: Point) -> tuple[float, ...] | None:
        if point.kind == "histogram_delta":
            return point.counts
        previous = self._previous(point)
        self._last[(self._key(point.rule), point.series)] = (point.start, point.ts, point.counts)
        if previous is None:
            return None
        start, ts, before = previous
        assert isinstance(before, tuple)
        if point.ts <= ts or len(before) != len(point.counts):
            return None
        diff = tuple(a - b for a, b in zip(point.counts, before, strict=True))
        if min(diff, default=0.0) >= 0 and (point.start is None or start is None
                                            or point.start == start or point.start <= ts):
            return diff
        # Reset: the counts since the new start are the interval's only if it began after ts.
        if point.start is not None and point.start >= ts:
            return point.counts
        return None


_TS = attrgetter("ts")


def _plain(entry: object) -> tuple[tuple[object, ...], tuple[object, ...]]:
    """A ``[key, value]`` pair of a snapshot with its lists as tuples again."""
    if type(entry) is not list or len(entry) != 2 or type(entry[0]) is not list \
            or type(entry[1]) is not list or len(entry[1]) not in (2, 3):
        raise ValueError(f"OTLP rate state: bad entry {entry!r:.200}")
    key = _tuples(entry[0])
    value = _tuples(entry[1])
    assert isinstance(key, tuple) and isinstance(value, tuple)
    return key, value


def _tuples(value: object) -> object:
    if type(value) is list:
        return tuple(_tuples(item) for item in value)
    if value is None or type(value) in (str, float, int):
        return value
    raise ValueError(f"OTLP rate state: {type(value).__name__} in a key")


def _float(value: object) -> float | None:
    return None if value is None else float(value)  # type: ignore[arg-type]


def _number(value: object, optional: bool = False) -> bool:
    if value is None:
        return optional
    return type(value) in (float, int) and math.isfinite(value)  # type: ignore[arg-type]


def _opt(fn: Callable[[float, float], float], a: float | None,
         b: float | None) -> float | None:
    if a is None or b is None:
        return None
    return fn(a, b)
