"""OTLP metrics as the OpenTelemetry Collector's Kafka exporter writes them → ``Point`` lists.

The exporter's ``otlp_proto`` encoding (its default) is an ``ExportMetricsServiceRequest``
(wire-identical to ``MetricsData``) in protobuf; ``otlp_json`` is the same message in OTLP/JSON.
Both are decoded with the official classes of ``opentelemetry-proto``. A message holds many
resources (services) and points; each point that a rule maps becomes one ``Point``; a point
flagged "no recorded value" becomes a missing point (no sample, never zero).

``decode_otlp`` never raises on input: it returns the points or a readable error (the caller
dead-letters the message with its original bytes and headers).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, cast

import msgspec
from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1 import metrics_pb2

from rollguard.streams.ingest.mapping import MetricRule, OtlpConfig
from rollguard.streams.ingest.otlp_json import Unsure, decoder, integer
from rollguard.streams.ingest.rates import Kind, Point

__all__ = ["OtlpDecoded", "decode_otlp", "encoding_of"]

_NO_VALUE = metrics_pb2.DataPointFlags.DATA_POINT_FLAGS_NO_RECORDED_VALUE_MASK
_DELTA = metrics_pb2.AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA
_CUMULATIVE = metrics_pb2.AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
_new = tuple.__new__


@dataclass(frozen=True, slots=True)
class OtlpDecoded:
    """The mapped points of one message, or why it cannot be used."""

    points: list[Point]
    error: str | None = None
    unmapped: int = 0
    """Points of metrics that no rule names (skipped)."""
    unmapped_metrics: dict[str, int] = field(default_factory=dict)
    """Those points by metric name."""


def encoding_of(headers: dict[str, bytes], default: str) -> str:
    """The message's encoding: its content-type header if it says, else ``default``."""
    content_type = headers.get("content-type", b"").decode("latin-1").lower()
    if "json" in content_type:
        return "otlp_json"
    if "protobuf" in content_type:
        return "otlp_proto"
    return default


def _text(value: AnyValue) -> str:
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return str(value.string_value)
    if kind is None:
        return ""
    if kind == "int_value":
        return str(integer(value.int_value))
    if kind in ("array_value", "kvlist_value") and not isinstance(value, Message):
        raise Unsure  # protobuf's text form of the value: json_format reads it
    return str(getattr(value, kind))


def _attributes(items: Iterable[KeyValue]) -> dict[str, str]:
    return {kv.key: _text(kv.value) for kv in items}


def _reference(value: bytes, encoding: str) -> ExportMetricsServiceRequest | str:
    """The message as the official classes read it, or why they cannot."""
    request = ExportMetricsServiceRequest()
    if encoding == "otlp_json":
        try:
            json_format.Parse(value, request, ignore_unknown_fields=True)
        except (json_format.ParseError, UnicodeDecodeError, ValueError, RecursionError) as err:
            return f"not OTLP/JSON metrics (otlp_json): {str(err)[:200]}"
        return request
    try:
        request.ParseFromString(value)
    except (DecodeError, ValueError) as err:
        return f"not OTLP protobuf metrics (otlp_proto): {err}"
    return request


def decode_otlp(value: bytes, config: OtlpConfig, encoding: str | None = None) -> OtlpDecoded:
    """Decode one message and map its points by ``config.rules``.

    ``otlp_json`` is first read into structs made from the official classes' descriptors
    (``streams/ingest/otlp_json.py``); what those do not read exactly as ``json_format.Parse``
    does is read by ``json_format.Parse``.
    """
    encoding = encoding or config.encoding
    if encoding == "otlp_json":
        try:
            # The structs have the fields, names and defaults of the official classes.
            fast = cast(ExportMetricsServiceRequest,
                        decoder(ExportMetricsServiceRequest).decode(value))
            return _mapped(fast, _Mapping.of(config))
        except (msgspec.ValidationError, msgspec.DecodeError, Unsure):
            pass
    parsed = _reference(value, encoding)
    if isinstance(parsed, str):
        return OtlpDecoded([], parsed)
    return _mapped(parsed, _Mapping.of(config))


class _Mapping:
    """``config.rules`` by metric name, and which rules take a point with a given attribute
    set (resolved once per (metric name, attribute set), not per point)."""

    _LAST: tuple[OtlpConfig, _Mapping] | None = None
    _MAX_SELECTIONS = 10_000

    def __init__(self, config: OtlpConfig) -> None:
        self.config = config
        self.by_source: dict[str, tuple[MetricRule, ...]] = {}
        for rule in config.rules:
            self.by_source[rule.source] = (*self.by_source.get(rule.source, ()), rule)
        self._selections: dict[tuple[str, tuple[tuple[str, str], ...]], _Selection] = {}
        self.plain = {name: _Selection({}, (), tuple(rule.selects({}) for rule in rules))
                      for name, rules in self.by_source.items()}
        """Per metric name: the selection of a point without attributes."""
        self.one_gauge = {name for name, rules in self.by_source.items()
                          if len(rules) == 1 and rules[0].kind in ("auto", "gauge")}
        """Metric names with one rule that takes a gauge."""

    @classmethod
    def of(cls, config: OtlpConfig) -> _Mapping:
        last = cls._LAST
        if last is None or last[0] is not config:
            last = cls._LAST = (config, cls(config))
        return last[1]

    def selection(self, name: str, attributes: tuple[tuple[str, str], ...]) -> _Selection:
        key = (name, attributes)
        found = self._selections.get(key)
        if found is None:
            if len(self._selections) >= self._MAX_SELECTIONS:
                self._selections.clear()
            attrs = dict(attributes)
            found = self._selections[key] = _Selection(
                attrs, tuple(sorted(attrs.items())),
                tuple(rule.selects(attrs) for rule in self.by_source[name]))
        return found


@dataclass(frozen=True, slots=True)
class _Selection:
    attributes: dict[str, str]
    ordered: tuple[tuple[str, str], ...]
    """The attributes sorted (part of a series' identity)."""
    selected: tuple[bool, ...]
    """Per rule of the metric (in ``by_source`` order): does it select this attribute set."""


def _mapped(parsed: ExportMetricsServiceRequest, mapping: _Mapping) -> OtlpDecoded:
    config = mapping.config
    points: list[Point] = []
    unmapped: dict[str, int] = {}
    times: dict[object, float] = {}
    starts: dict[object, float | None] = {}
    by_source, one_gauge = mapping.by_source, mapping.one_gauge
    for r, resource_metrics in enumerate(parsed.resource_metrics):
        resource = _attributes(resource_metrics.resource.attributes)
        service = resource.get(config.service_attribute, "")
        instance = resource.get(config.instance_attribute) or None
        where = _Resource(service, instance, tuple(sorted(resource.items())), times, starts)
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                name = metric.name
                rules = by_source.get(name)
                if not rules:
                    unmapped[name] = unmapped.get(name, 0) + _count(metric)
                    continue
                if not service:
                    return OtlpDecoded([], (
                        f"resource_metrics[{r}] has no resource attribute "
                        f"{config.service_attribute!r} (metric {name!r}); set it in the "
                        "SDK (OTEL_SERVICE_NAME) or with the Collector's resource processor"))
                if name in one_gauge and metric.WhichOneof("data") == "gauge":
                    _numbers(name, rules, metric.gauge.data_points, "gauge", mapping, where,
                             points)  # the common case, without _points' checks
                    continue
                found = _points(metric, name, rules, mapping, where, points)
                if found is not None:
                    return OtlpDecoded([], f"metric {name!r}: {found}")
    skipped = sum(unmapped.values())
    if unmapped and config.unmapped == "dead_letter" and not points:
        return OtlpDecoded([], "no metric in the message is mapped (ingest.otlp.rules)",
                           skipped, unmapped)
    return OtlpDecoded(points, None, skipped, unmapped)


class _Resource(NamedTuple):  # one per resource of a message: a tuple is the cheapest
    service: str
    instance: str | None
    ordered: tuple[tuple[str, str], ...]
    """Its attributes sorted (part of a series' identity)."""
    times: dict[object, float]
    """Point times (epoch nanoseconds as read) → seconds, for the whole message."""
    starts: dict[object, float | None]


def _count(metric: metrics_pb2.Metric) -> int:
    kind = metric.WhichOneof("data")
    return len(getattr(metric, kind).data_points) if kind else 0


def _points(metric: metrics_pb2.Metric, name: str, rules: tuple[MetricRule, ...],
            mapping: _Mapping, where: _Resource, out: list[Point]) -> str | None:
    """Append the metric's mapped points to ``out``; or why the metric cannot be used."""
    data = metric.WhichOneof("data")
    if data == "gauge" or (data == "sum" and not metric.sum.is_monotonic):
        for rule in rules:
            if rule.kind not in ("auto", "gauge"):
                return f"is a {data} (non-monotonic), the rule says kind {rule.kind!r}"
        _numbers(name, rules, metric.gauge.data_points if data == "gauge"
                 else metric.sum.data_points, "gauge", mapping, where, out)
        return None
    if data == "sum":
        for rule in rules:
            if rule.kind not in ("auto", "counter"):
                return f"is a monotonic sum, the rule says kind {rule.kind!r}"
        kind: Kind = _temporality(metric.sum.aggregation_temporality, "delta", "cumulative")
        _numbers(name, rules, metric.sum.data_points, kind, mapping, where, out)
        return None
    if data == "histogram":
        for rule in rules:
            if rule.kind not in ("auto", "histogram") or rule.percentile is None:
                return "is a histogram; its rule needs kind histogram and a percentile"
        kind = _temporality(metric.histogram.aggregation_temporality, "histogram_delta",
                            "histogram_cumulative")
        delta = kind == "histogram_delta"
        rows: list[tuple[_Selection, metrics_pb2.HistogramDataPoint, tuple[float, ...]]] = []
        for dp in metric.histogram.data_points:
            chosen = mapping.selection(name, _attribute_items(dp.attributes))
            if not any(chosen.selected):
                continue
            counts = tuple(float(c) for c in dp.bucket_counts)
            if counts and len(counts) != len(dp.explicit_bounds) + 1:
                return (f"histogram point has {len(counts)} bucket counts for "
                        f"{len(dp.explicit_bounds)} bounds (expected bounds + 1)")
            rows.append((chosen, dp, counts))
        for i, rule in enumerate(rules):
            for chosen, dp, counts in rows:
                if not chosen.selected[i]:
                    continue
                start = integer(dp.start_time_unix_nano)
                out.append(Point(
                    service=where.service, instance=where.instance, rule=rule, kind=kind,
                    series=(name, where.service, where.instance, chosen.ordered,
                            where.ordered),
                    ts=_seconds(integer(dp.time_unix_nano)),
                    start=_seconds(start) if start else None,
                    counts=counts, bounds=tuple(dp.explicit_bounds),
                    low=dp.min if delta and dp.HasField("min") else None,
                    high=dp.max if delta and dp.HasField("max") else None,
                    attributes=chosen.attributes,
                    missing=bool(integer(dp.flags) & _NO_VALUE) or not counts,
                ))
        return None
    return f"{data or 'empty'} metrics are not supported (gauge, sum, histogram are)"


def _attribute_items(items: Sequence[KeyValue]) -> tuple[tuple[str, str], ...]:
    if not items:
        return ()
    return tuple([(kv.key, _text(kv.value)) for kv in items])


def _seconds(nanos: int) -> float:
    """Epoch nanoseconds → seconds, exact to the nearest float of a millisecond time."""
    whole, rest = divmod(nanos, 1_000_000_000)
    return whole + rest / 1e9


def _temporality(value: int | str, delta: Kind, cumulative: Kind) -> Kind:
    if type(value) is str:  # a name (OTLP/JSON)
        value = metrics_pb2.AggregationTemporality.Value(value)
    return delta if value == _DELTA else cumulative


def _numbers(name: str, rules: tuple[MetricRule, ...],
             data_points: Iterable[metrics_pb2.NumberDataPoint], kind: Kind,
             mapping: _Mapping, where: _Resource, out: list[Point]) -> None:
    """Append the points of ``rules`` (rule by rule, each in the message's order) to ``out``.

    The per-point work is kept small: the attribute set is resolved once per (metric,
    attribute set) (``_Mapping.selection``), each time once per message (the points of one
    export share their times)."""
    service, instance = where.service, where.instance
    selection = mapping.selection
    plain = mapping.plain[name]
    single = len(rules) == 1
    rows: list[tuple[tuple[bool, ...], Point]] | None = None if single else []
    times, starts = where.times, where.starts
    gauge = kind == "gauge"
    for dp in data_points:
        attributes = dp.attributes
        chosen = selection(name, _attribute_items(attributes)) if attributes else plain
        if single and not chosen.selected[0]:
            continue
        which = dp.WhichOneof("value")
        if which == "as_double":
            value: float | None = dp.as_double
        elif which == "as_int":
            value = float(integer(dp.as_int))
        else:
            value = None
        nanos = dp.time_unix_nano
        ts = times.get(nanos)
        if ts is None:
            ts = times[nanos] = _seconds(integer(nanos))
        if gauge:
            start = None  # a gauge's value needs no interval
        else:
            nanos = dp.start_time_unix_nano
            start = starts.get(nanos, -1.0)
            if start == -1.0:
                start = starts[nanos] = _seconds(integer(nanos)) if integer(nanos) else None
        flags = dp.flags
        point = _new(Point, (  # Point(...) without its generated __new__: one call less
            service, instance, rules[0], kind,
            (name, service, instance, chosen.ordered, where.ordered)
            if kind == "cumulative" else (),
            ts, start, value, (), (), None, None, chosen.attributes,
            value is None or bool(flags and integer(flags) & _NO_VALUE)))
        if rows is None:
            out.append(point)
        else:
            rows.append((chosen.selected, point))
    for i, rule in enumerate(rules if rows else ()):
        for selected, point in rows or ():
            if selected[i]:
                out.append(point if i == 0 else point._replace(rule=rule))
