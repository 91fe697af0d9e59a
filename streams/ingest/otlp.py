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

from collections.abc import Iterable
from dataclasses import dataclass

from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1 import metrics_pb2

from rollguard.streams.ingest.mapping import MetricRule, OtlpConfig
from rollguard.streams.ingest.otlp_json import parse_json
from rollguard.streams.ingest.rates import Kind, Point

__all__ = ["OtlpDecoded", "decode_otlp", "encoding_of"]

_NO_VALUE = metrics_pb2.DataPointFlags.DATA_POINT_FLAGS_NO_RECORDED_VALUE_MASK
_DELTA = metrics_pb2.AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA
_CUMULATIVE = metrics_pb2.AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE


@dataclass(frozen=True, slots=True)
class OtlpDecoded:
    """The mapped points of one message, or why it cannot be used."""

    points: list[Point]
    error: str | None = None
    unmapped: int = 0
    """Points of metrics that no rule names (skipped)."""


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
    return str(getattr(value, kind))


def _attributes(items: Iterable[KeyValue]) -> dict[str, str]:
    return {kv.key: _text(kv.value) for kv in items}


def _parse(value: bytes, encoding: str) -> ExportMetricsServiceRequest | str:
    if encoding == "otlp_json":
        try:  # json_format's result and errors, faster (streams/ingest/otlp_json.py)
            return parse_json(value, ExportMetricsServiceRequest)
        except (json_format.ParseError, UnicodeDecodeError, ValueError) as err:
            return f"not OTLP/JSON metrics (otlp_json): {str(err)[:200]}"
    request = ExportMetricsServiceRequest()
    try:
        request.ParseFromString(value)
    except (DecodeError, ValueError) as err:
        return f"not OTLP protobuf metrics (otlp_proto): {err}"
    return request


def decode_otlp(value: bytes, config: OtlpConfig, encoding: str | None = None) -> OtlpDecoded:
    """Decode one message and map its points by ``config.rules``."""
    parsed = _parse(value, encoding or config.encoding)
    if isinstance(parsed, str):
        return OtlpDecoded([], parsed)
    by_source: dict[str, list[MetricRule]] = {}
    for rule in config.rules:
        by_source.setdefault(rule.source, []).append(rule)
    points: list[Point] = []
    unmapped = 0
    for r, resource_metrics in enumerate(parsed.resource_metrics):
        resource = _attributes(resource_metrics.resource.attributes)
        service = resource.get(config.service_attribute, "")
        instance = resource.get(config.instance_attribute) or None
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                rules = by_source.get(metric.name)
                if not rules:
                    unmapped += _count(metric)
                    continue
                if not service:
                    return OtlpDecoded([], (
                        f"resource_metrics[{r}] has no resource attribute "
                        f"{config.service_attribute!r} (metric {metric.name!r}); set it in the "
                        "SDK (OTEL_SERVICE_NAME) or with the Collector's resource processor"))
                for rule in rules:
                    found = _points(metric, rule, service, instance, resource)
                    if isinstance(found, str):
                        return OtlpDecoded([], f"metric {metric.name!r}: {found}")
                    points.extend(found)
    if unmapped and config.unmapped == "dead_letter" and not points:
        return OtlpDecoded([], "no metric in the message is mapped (ingest.otlp.rules)",
                           unmapped)
    return OtlpDecoded(points, None, unmapped)


def _count(metric: metrics_pb2.Metric) -> int:
    kind = metric.WhichOneof("data")
    return len(getattr(metric, kind).data_points) if kind else 0


def _points(metric: metrics_pb2.Metric, rule: MetricRule, service: str, instance: str | None,
            resource: dict[str, str]) -> list[Point] | str:
    data = metric.WhichOneof("data")
    if data == "gauge" or (data == "sum" and not metric.sum.is_monotonic):
        if rule.kind not in ("auto", "gauge"):
            return f"is a {data} (non-monotonic), the rule says kind {rule.kind!r}"
        return _numbers(metric, metric.gauge.data_points if data == "gauge"
                        else metric.sum.data_points, "gauge", rule, service, instance, resource)
    if data == "sum":
        if rule.kind not in ("auto", "counter"):
            return f"is a monotonic sum, the rule says kind {rule.kind!r}"
        kind: Kind = _temporality(metric.sum.aggregation_temporality, "delta", "cumulative")
        return _numbers(metric, metric.sum.data_points, kind, rule, service, instance, resource)
    if data == "histogram":
        if rule.kind not in ("auto", "histogram") or rule.percentile is None:
            return "is a histogram; its rule needs kind histogram and a percentile"
        kind = _temporality(metric.histogram.aggregation_temporality, "histogram_delta",
                            "histogram_cumulative")
        out: list[Point] = []
        for dp in metric.histogram.data_points:
            attrs = _attributes(dp.attributes)
            if not rule.selects(attrs):
                continue
            bounds = tuple(dp.explicit_bounds)
            counts = tuple(float(c) for c in dp.bucket_counts)
            if counts and len(counts) != len(bounds) + 1:
                return (f"histogram point has {len(counts)} bucket counts for {len(bounds)} "
                        "bounds (expected bounds + 1)")
            delta = kind == "histogram_delta"
            out.append(Point(
                service=service, instance=instance, rule=rule, kind=kind,
                series=_series(metric.name, attrs, service, instance, resource),
                ts=_seconds(dp.time_unix_nano),
                start=_seconds(dp.start_time_unix_nano) if dp.start_time_unix_nano else None,
                counts=counts, bounds=bounds,
                low=dp.min if delta and dp.HasField("min") else None,
                high=dp.max if delta and dp.HasField("max") else None,
                attributes=attrs,
                missing=bool(dp.flags & _NO_VALUE) or not counts,
            ))
        return out
    return f"{data or 'empty'} metrics are not supported (gauge, sum, histogram are)"


def _seconds(nanos: int) -> float:
    """Epoch nanoseconds → seconds, exact to the nearest float of a millisecond time."""
    whole, rest = divmod(nanos, 1_000_000_000)
    return whole + rest / 1e9


def _temporality(value: int, delta: Kind, cumulative: Kind) -> Kind:
    return delta if value == _DELTA else cumulative


def _numbers(metric: metrics_pb2.Metric, data_points: Iterable[metrics_pb2.NumberDataPoint],
             kind: Kind, rule: MetricRule, service: str, instance: str | None,
             resource: dict[str, str]) -> list[Point]:
    out: list[Point] = []
    stateful = kind == "cumulative"
    selective = bool(rule.where)
    for dp in data_points:
        attrs = _attributes(dp.attributes) if dp.attributes else {}
        if selective and not rule.selects(attrs):
            continue
        which = dp.WhichOneof("value")
        if which == "as_double":
            value: float | None = dp.as_double
        elif which == "as_int":
            value = float(dp.as_int)
        else:
            value = None
        start = dp.start_time_unix_nano
        out.append(Point(
            service, instance, rule, kind,
            _series(metric.name, attrs, service, instance, resource) if stateful else (),
            _seconds(dp.time_unix_nano), _seconds(start) if start else None,
            value, (), (), None, None, attrs, bool(dp.flags & _NO_VALUE) or value is None,
        ))
    return out


def _series(name: str, attrs: dict[str, str], service: str, instance: str | None,
            resource: dict[str, str]) -> tuple[object, ...]:
    return (name, service, instance, tuple(sorted(attrs.items())),
            tuple(sorted(resource.items())))
