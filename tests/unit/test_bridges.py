"""The bridges' decoding: remote-write bodies and Alertmanager webhook payloads."""

from __future__ import annotations

import math
import struct

import cramjam
import orjson
import pytest

from rollguard.streams.bridges.alertmanager import alerts_of
from rollguard.streams.bridges.common import BridgeError
from rollguard.streams.bridges.prometheus import STALE_NAN_BITS, is_stale, samples_of
from rollguard.streams.bridges.prompb import WriteRequest
from rollguard.streams.ingest.mapping import AlertmanagerBridge, PrometheusBridge
from rollguard.streams.ingest.rates import SampleBuilder

T0_MS = 1_795_593_600_000
STALE = struct.unpack("<d", struct.pack("<Q", STALE_NAN_BITS))[0]
HEADERS = {"Content-Type": "application/x-protobuf", "Content-Encoding": "snappy"}


def body(*series: tuple[dict[str, str], list[tuple[int, float]]]) -> bytes:
    request = WriteRequest()
    for labels, samples in series:
        ts = request.timeseries.add()
        for name, value in labels.items():
            ts.labels.add(name=name, value=value)
        for at, value in samples:
            ts.samples.add(timestamp=at, value=value)
    return bytes(cramjam.snappy.compress_raw(request.SerializeToString()))


def decode(data: bytes, builder: SampleBuilder | None = None,
           headers: dict[str, str] = HEADERS) -> list[tuple[str, str, float, float]]:
    samples, _ = samples_of(data, headers, PrometheusBridge(), builder or SampleBuilder("p"))
    return [(s.service, s.name, s.ts, round(s.value, 9)) for s in samples]


def test_recording_rule_output_is_a_gauge_and_staleness_is_no_sample() -> None:
    data = body(({"__name__": "service:error_rate:ratio", "service": "checkout"},
                 [(T0_MS, 0.01), (T0_MS + 1000, STALE), (T0_MS + 2000, 0.02)]))
    assert decode(data) == [("checkout", "error_rate", T0_MS / 1000, 0.01),
                            ("checkout", "error_rate", T0_MS / 1000 + 2, 0.02)]
    assert is_stale(STALE) and not is_stale(math.nan)


def test_raw_counters_become_rates_and_error_ratios() -> None:
    builder = SampleBuilder("p")

    def scrape(at: int, ok: float, errors: float) -> bytes:
        return body(({"__name__": "http_requests_total", "service": "a", "code": "200"},
                     [(at, ok)]),
                    ({"__name__": "http_requests_total", "service": "a", "code": "500"},
                     [(at, errors)]))

    assert decode(scrape(T0_MS, 100, 0), builder) == []  # primes
    got = sorted(decode(scrape(T0_MS + 10_000, 190, 10), builder))
    assert got == [("a", "error_rate", T0_MS / 1000 + 10, 0.1),
                   ("a", "request_rate", T0_MS / 1000 + 10, 10.0)]


@pytest.mark.parametrize(("data", "headers", "status"), [
    # not snappy
    (b"plain protobuf?", HEADERS, 400),
    # snappy, but not a WriteRequest
    (bytes(cramjam.snappy.compress_raw(b"\xff\xff\xff")), HEADERS, 400),
    # remote-write 1.0 is protobuf, not JSON
    (b"{}", {**HEADERS, "Content-Type": "application/json"}, 415),
    # and snappy, not gzip
    (b"x", {**HEADERS, "Content-Encoding": "gzip"}, 415),
])
def test_bad_remote_write_bodies_get_non_retryable_answers(
        data: bytes, headers: dict[str, str], status: int) -> None:
    with pytest.raises(BridgeError) as caught:
        decode(data, headers=headers)
    assert caught.value.status == status and caught.value.dead_letter


def _payload(*alerts: dict[str, object]) -> bytes:
    return orjson.dumps({"version": "4", "status": "firing", "receiver": "rollguard",
                         "groupKey": "{}:{}", "alerts": list(alerts)})


def test_webhook_alerts_are_mapped() -> None:
    firing = {"status": "firing", "fingerprint": "9f1", "startsAt": "2026-11-25T08:03:10Z",
              "endsAt": "0001-01-01T00:00:00Z",
              "labels": {"alertname": "HighErrorRate", "service": "checkout",
                         "severity": "page"}}
    resolved = {**firing, "status": "resolved", "endsAt": "2026-11-25T08:05:00Z",
                "labels": {"alertname": "Slow", "service": "checkout", "severity": "odd"}}
    orphan = {**firing, "labels": {"alertname": "NoService"}}
    alerts, problems = alerts_of(_payload(firing, resolved, orphan), AlertmanagerBridge())
    assert [(a.alert_id, a.name, a.severity, a.status, a.ts) for a in alerts] == [
        ("9f1", "HighErrorRate", "critical", "firing", 1795593790.0),
        ("9f1", "Slow", "warning", "resolved", 1795593900.0)]
    assert len(problems) == 1 and "service" in problems[0]


@pytest.mark.parametrize("data", [b"not json", orjson.dumps({"version": "3", "alerts": []})])
def test_bad_webhook_payloads_are_refused(data: bytes) -> None:
    with pytest.raises(BridgeError) as caught:
        alerts_of(data, AlertmanagerBridge())
    assert caught.value.status == 400


async def test_a_saturated_bridge_answers_503_without_dead_lettering() -> None:
    from rollguard.models.events import MetricSample
    from rollguard.streams.bridges.prometheus import PrometheusWriteBridge
    from rollguard.streams.settings import load_settings

    bridge = PrometheusWriteBridge(load_settings())
    bridge.in_flight = bridge.max_in_flight  # the producer has this much unacknowledged
    sample = MetricSample(service="a", name="error_rate", value=0.1, ts=1.0)
    with pytest.raises(BridgeError) as caught:
        await bridge.publish([sample])
    assert caught.value.status == 503 and not caught.value.dead_letter


@pytest.mark.parametrize(("env", "field"), [
    # a histogram rule without the percentile it should compute
    ('[{"source": "d", "metric": "latency_p99_ms", "kind": "histogram"}]', "percentile"),
    # a regular expression that does not compile
    ('[{"source": "c", "metric": "error_rate", "where": {"code": "5(("}}]',
     "not a regular expression"),
])
def test_bad_mapping_is_refused_at_start(monkeypatch: pytest.MonkeyPatch, env: str,
                                         field: str) -> None:
    from rollguard.streams.settings import ConfigError, load_settings

    monkeypatch.setenv("ROLLGUARD_INGEST__OTLP__RULES", env)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    message = str(caught.value)
    assert "ingest.otlp.rules" in message and field in message
    assert "ROLLGUARD_INGEST__OTLP__RULES" in message
