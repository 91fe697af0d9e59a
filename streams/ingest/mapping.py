"""The ``ingest:`` section of ``config/rollguard.yaml``: how foreign telemetry maps to records.

One rule maps one foreign metric (an OTLP metric name, or a Prometheus series name) to one
rollguard metric (DESIGN §3 ``MetricSample.name``). What the rule does depends on the kind of
data it meets:

- a gauge (or a Prometheus series with ``kind: gauge``): each value is a sample (× ``scale``);
- a monotonic sum / counter: per-second rates, summed over the series ``where`` selects at one
  timestamp; with ``errors_where``, the ratio of the rate of the matching series to that sum
  (a request counter split by status → ``error_rate``);
- an explicit-bucket histogram: the ``percentile`` of the observations in the interval,
  interpolated within the bucket (× ``scale``).

Validated at start; a bad rule is refused with the field and the fix (``load_settings``).
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = [
    "AlertmanagerBridge",
    "IngestConfig",
    "MetricRule",
    "OtlpConfig",
    "PrometheusBridge",
    "default_rules",
]


class MetricRule(BaseModel):
    """Foreign metric ``source`` → rollguard metric ``metric``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    source: str = Field(min_length=1)
    """OTLP metric name, or Prometheus ``__name__``."""
    metric: str = Field(min_length=1)
    kind: Literal["auto", "gauge", "counter", "histogram"] = "auto"
    """``auto``: from the OTLP data (gauge / sum / histogram). Prometheus series carry no type
    on the wire: there ``auto`` means gauge, ``counter`` must be said."""
    where: dict[str, str] = {}
    """Attribute (label) name → regular expression (full match) that selects the series."""
    errors_where: dict[str, str] | None = None
    """Counters only: the share of the selected rate whose series match these is the value."""
    percentile: float | None = Field(default=None, gt=0, lt=100)
    """Histograms: which percentile (e.g. 99)."""
    scale: float = Field(default=1.0, gt=0)
    """Multiplies the value (e.g. 1000 for a histogram in seconds → ``latency_p99_ms``)."""

    @field_validator("where", "errors_where")
    @classmethod
    def _patterns_compile(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        for name, pattern in (value or {}).items():
            try:
                re.compile(pattern)
            except re.error as err:
                message = f"{name}: {pattern!r} is not a regular expression ({err})"
                raise ValueError(message) from None
        return value

    @model_validator(mode="after")
    def _consistent(self) -> MetricRule:
        if self.kind == "histogram" and self.percentile is None:
            raise ValueError("a histogram rule needs percentile (e.g. percentile: 99)")
        if self.errors_where is not None and self.kind not in ("auto", "counter"):
            raise ValueError("errors_where applies to counters only (kind: counter)")
        return self

    def selects(self, attributes: dict[str, str]) -> bool:
        return _matches(self.where, attributes)

    def is_error(self, attributes: dict[str, str]) -> bool:
        return self.errors_where is not None and _matches(self.errors_where, attributes)


def _matches(patterns: dict[str, str], attributes: dict[str, str]) -> bool:
    return all(re.fullmatch(p, attributes.get(k, "")) is not None for k, p in patterns.items())


def default_rules() -> tuple[MetricRule, ...]:
    """OpenTelemetry HTTP semantic conventions → the three metrics of the default policy."""
    return (
        MetricRule(source="http.server.request.duration", metric="latency_p99_ms",
                   kind="histogram", percentile=99, scale=1000.0),
        MetricRule(source="http.server.request.count", metric="request_rate", kind="counter"),
        MetricRule(source="http.server.request.count", metric="error_rate", kind="counter",
                   errors_where={"http.response.status_code": "5.."}),
    )


class OtlpConfig(BaseModel):
    """OTLP metrics on Kafka, as the OpenTelemetry Collector's Kafka exporter writes them."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    encoding: Literal["otlp_proto", "otlp_json"] = "otlp_proto"
    """What the topic carries when a message has no content-type header saying otherwise."""
    service_attribute: str = "service.name"
    instance_attribute: str = "service.instance.id"
    unmapped: Literal["ignore", "dead_letter"] = "ignore"
    """A metric no rule names: counted and skipped (a Collector exports everything), or a
    dead letter for the whole message."""
    rules: tuple[MetricRule, ...] = Field(default_factory=default_rules)


class PrometheusBridge(BaseModel):
    """``rollguard bridge prometheus``: remote-write 1.0 → ``telemetry.metrics``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(default=9201, ge=0, le=65535)
    service_label: str = "service"
    instance_label: str = "instance"
    max_body_bytes: int = Field(default=8 * 1024 * 1024, gt=0)
    max_in_flight: int = Field(default=20_000, gt=0)
    """Samples handed to the producer and not yet acknowledged beyond which the bridge answers
    503 with Retry-After (Prometheus backs off and retries)."""
    rules: tuple[MetricRule, ...] = (
        MetricRule(source="service:error_rate:ratio", metric="error_rate"),
        MetricRule(source="service:latency_p99:ms", metric="latency_p99_ms"),
        MetricRule(source="service:request_rate:rps", metric="request_rate"),
        MetricRule(source="http_requests_total", metric="request_rate", kind="counter"),
        MetricRule(source="http_requests_total", metric="error_rate", kind="counter",
                   errors_where={"code": "5.."}),
    )


class AlertmanagerBridge(BaseModel):
    """``rollguard bridge alertmanager``: webhook payload v4 → ``telemetry.alerts``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(default=9202, ge=0, le=65535)
    service_label: str = "service"
    severity_label: str = "severity"
    severities: dict[str, Literal["critical", "warning", "info"]] = {
        "critical": "critical", "page": "critical", "error": "critical",
        "warning": "warning", "warn": "warning", "info": "info", "none": "info",
    }
    """Label value (lower-cased) → severity; any other value is ``default_severity``."""
    default_severity: Literal["critical", "warning", "info"] = "warning"
    max_body_bytes: int = Field(default=4 * 1024 * 1024, gt=0)


class IngestConfig(BaseModel):
    """Everything about foreign inputs (the ``ingest:`` section of ``config/rollguard.yaml``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    otlp: OtlpConfig = OtlpConfig()
    prometheus: PrometheusBridge = PrometheusBridge()
    alertmanager: AlertmanagerBridge = AlertmanagerBridge()
    cloudevents_source: str = "rollguard"
    """``ce_source`` of the CloudEvents headers on rollguard's output records."""
