"""OTLP metric messages built with the official protobuf classes (tests and bench)."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

from google.protobuf import json_format
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1 import metrics_pb2 as pb

DELTA = pb.AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA
CUMULATIVE = pb.AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
NO_VALUE = pb.DataPointFlags.DATA_POINT_FLAGS_NO_RECORDED_VALUE_MASK
NS = 1_000_000_000


def nanos(seconds: float) -> int:
    """Epoch seconds → nanoseconds, from the float's shortest decimal form (exact round trip)."""
    return int(Decimal(repr(seconds)) * NS)


def attrs(**values: object) -> list[KeyValue]:
    out = []
    for key, value in values.items():
        key = key.replace("__", ".")
        if isinstance(value, int):
            out.append(KeyValue(key=key, value=AnyValue(int_value=value)))
        else:
            out.append(KeyValue(key=key, value=AnyValue(string_value=str(value))))
    return out


def number(ts: float, value: float | None, start: float | None = None, flags: int = 0,
           **attributes: object) -> pb.NumberDataPoint:
    point = pb.NumberDataPoint(time_unix_nano=nanos(ts), attributes=attrs(**attributes),
                               flags=flags)
    if start is not None:
        point.start_time_unix_nano = nanos(start)
    if value is not None:
        if float(value).is_integer() and not isinstance(value, float):
            point.as_int = int(value)
        else:
            point.as_double = float(value)
    return point


def gauge(name: str, points: Sequence[pb.NumberDataPoint]) -> pb.Metric:
    return pb.Metric(name=name, gauge=pb.Gauge(data_points=list(points)))


def counter(name: str, points: Sequence[pb.NumberDataPoint], temporality: int) -> pb.Metric:
    return pb.Metric(name=name, sum=pb.Sum(data_points=list(points), is_monotonic=True,
                                           aggregation_temporality=temporality))


def histogram(name: str, ts: float, start: float, counts: Sequence[int],
              bounds: Sequence[float], temporality: int = DELTA, flags: int = 0,
              **attributes: object) -> pb.Metric:
    point = pb.HistogramDataPoint(
        time_unix_nano=nanos(ts), start_time_unix_nano=nanos(start),
        count=sum(counts), bucket_counts=list(counts), explicit_bounds=list(bounds),
        attributes=attrs(**attributes), flags=flags)
    return pb.Metric(name=name, histogram=pb.Histogram(
        data_points=[point], aggregation_temporality=temporality))


def request(*resources: tuple[dict[str, object], Sequence[pb.Metric]]
            ) -> ExportMetricsServiceRequest:
    """``resources``: (resource attributes, metrics) per service."""
    out = ExportMetricsServiceRequest()
    for resource, metrics in resources:
        rm = out.resource_metrics.add()
        rm.resource.attributes.extend(
            attrs(**{k.replace(".", "__"): v for k, v in resource.items()}))
        sm = rm.scope_metrics.add()
        sm.scope.name = "tests"
        sm.metrics.extend(metrics)
    return out


def encode(message: ExportMetricsServiceRequest, encoding: str) -> bytes:
    """Bytes as the Collector's Kafka exporter writes them (``otlp_json``: OTLP/JSON, enums as
    integers, int64 as strings)."""
    if encoding == "otlp_json":
        return json_format.MessageToJson(message, use_integers_for_enums=True,
                                         indent=None).encode()
    return message.SerializeToString()
