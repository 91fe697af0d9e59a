"""``rollguard bridge prometheus``: a Prometheus remote-write 1.0 endpoint → ``telemetry.metrics``.

Remote-write 1.0: ``POST`` of a snappy-compressed (block format) protobuf ``WriteRequest``,
``Content-Type: application/x-protobuf``, ``Content-Encoding: snappy``. Each series is mapped by
``ingest.prometheus.rules``: recording-rule outputs (``service:error_rate:ratio``) as gauges,
raw counters (``kind: counter``) as per-second rates (ratios with ``errors_where``); the service
is the ``service_label`` label. A staleness marker (the NaN with bits ``0x7ff0000000000002``
that Prometheus writes when a series disappears) is no sample, never NaN or zero; any other
non-finite value is skipped too.

Answers: 204 published; 400 undecodable body, 413 too big, 415 wrong content type or encoding
(not retried by Prometheus; dead-lettered); 503 with ``Retry-After`` when Kafka is unreachable
or too much is in flight (Prometheus backs off and retries).
"""

from __future__ import annotations

import copy
import math
import struct
from typing import Any

import cramjam
from aiohttp import web
from google.protobuf.message import DecodeError

from rollguard.models.events import MetricSample
from rollguard.streams.bridges.common import Bridge, BridgeError
from rollguard.streams.bridges.prompb import WriteRequest
from rollguard.streams.ingest.mapping import MetricRule, PrometheusBridge
from rollguard.streams.ingest.rates import Kind, Point, SampleBuilder
from rollguard.streams.settings import Settings

__all__ = ["STALE_NAN_BITS", "PrometheusWriteBridge", "is_stale", "samples_of"]

STALE_NAN_BITS = 0x7FF0000000000002


def is_stale(value: float) -> bool:
    """True for Prometheus' staleness marker."""
    return math.isnan(value) and struct.unpack("<Q", struct.pack("<d", value))[0] == STALE_NAN_BITS


def points_of(request: Any, config: PrometheusBridge) -> tuple[list[Point], list[str], int]:
    """The mapped points of a ``WriteRequest``; (points, series without service, unmapped)."""
    by_source: dict[str, list[MetricRule]] = {}
    for rule in config.rules:
        by_source.setdefault(rule.source, []).append(rule)
    points: list[Point] = []
    no_service: list[str] = []
    unmapped = 0
    for series in request.timeseries:
        labels = {label.name: label.value for label in series.labels}
        rules = by_source.get(labels.get("__name__", ""))
        if not rules:
            unmapped += len(series.samples)
            continue
        service = labels.get(config.service_label)
        if not service:
            no_service.append(labels.get("__name__", "") + str(sorted(labels.items()))[:200])
            continue
        instance = labels.get(config.instance_label) or None
        identity: tuple[object, ...] = ()
        for rule in rules:
            if rule.where and not rule.selects(labels):
                continue
            kind: Kind = "cumulative" if rule.kind == "counter" else "gauge"
            if kind == "cumulative" and not identity:
                identity = tuple(sorted(labels.items()))
            for sample in series.samples:
                value = sample.value
                stale = value != value and is_stale(value)  # NaN first: the cheap test
                ts = sample.timestamp / 1000.0
                points.append(Point(
                    service, instance, rule, kind, identity, ts, None,
                    None if stale or not math.isfinite(value) else value,
                    (), (), None, None, labels, stale))
    return points, no_service, unmapped


def samples_of(body: bytes, headers: dict[str, str], config: PrometheusBridge,
               builder: SampleBuilder) -> tuple[list[MetricSample], list[str]]:
    """Decode one remote-write body into samples (BridgeError if unusable)."""
    content_type = headers.get("Content-Type", "")
    if not content_type.startswith("application/x-protobuf"):
        raise BridgeError(415, f"Content-Type {content_type!r}: remote-write 1.0 sends "
                               "application/x-protobuf")
    encoding = headers.get("Content-Encoding", "")
    if encoding != "snappy":
        raise BridgeError(415, f"Content-Encoding {encoding!r}: remote-write 1.0 sends snappy")
    if len(body) > config.max_body_bytes:
        raise BridgeError(413, f"body of {len(body)} bytes exceeds "
                               f"ingest.prometheus.max_body_bytes={config.max_body_bytes}")
    try:
        raw = bytes(cramjam.snappy.decompress_raw(body))
    except Exception as err:  # noqa: BLE001 - cramjam raises its own DecompressionError
        raise BridgeError(400, f"body is not snappy (block format): {err}") from None
    request = WriteRequest()
    try:
        request.ParseFromString(raw)
    except (DecodeError, ValueError) as err:
        raise BridgeError(400, f"body is not a remote-write WriteRequest: {err}") from None
    points, no_service, _ = points_of(request, config)
    return builder.samples(points), no_service


class PrometheusWriteBridge(Bridge):
    """The remote-write endpoint (``POST /api/v1/write``)."""

    name = "prometheus"

    def __init__(self, settings: Settings) -> None:
        config = settings.ingest.prometheus
        super().__init__(settings, "metrics", config.max_in_flight)
        self.config = config
        self.builder = SampleBuilder(source="prometheus")

    def application(self) -> web.Application:
        return self.app("/api/v1/write", self.handle)

    async def handle(self, body: bytes, request: web.Request) -> list[MetricSample]:
        # A request that fails to publish is retried by Prometheus: the counters' previous
        # values must then be those from before it.
        saved = copy.copy(self.builder._last), copy.copy(self.builder._group_ts)
        samples, no_service = samples_of(body, dict(request.headers), self.config, self.builder)
        try:
            await self.publish(samples)
        except BridgeError:
            self.builder._last, self.builder._group_ts = saved
            raise
        if no_service:
            await self.dead_letter(body, request, (
                f"{len(no_service)} mapped series have no {self.config.service_label!r} label "
                f"(e.g. {no_service[0]}); add it with relabelling (write_relabel_configs)"))
        return []
