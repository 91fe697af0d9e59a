"""OTLP golden tests: messages built with the official classes, in both encodings."""

from __future__ import annotations

import pytest

from rollguard.streams.ingest.mapping import MetricRule, OtlpConfig
from rollguard.streams.ingest.otlp import decode_otlp
from rollguard.streams.ingest.rates import SampleBuilder, percentile
from tests.otlp_messages import (
    CUMULATIVE,
    DELTA,
    NO_VALUE,
    counter,
    encode,
    gauge,
    histogram,
    number,
    request,
)
from tests.unit.test_otlp_json import reference

T0 = 1_795_593_600.0
CONFIG = OtlpConfig(rules=(
    MetricRule(source="app.error_ratio", metric="error_rate"),
    MetricRule(source="http.server.request.count", metric="request_rate", kind="counter"),
    MetricRule(source="http.server.request.count", metric="error_rate", kind="counter",
               errors_where={"http.response.status_code": "5.."}),
    MetricRule(source="http.server.request.duration", metric="latency_p99_ms",
               kind="histogram", percentile=99, scale=1000.0),
))
ENCODINGS = ["otlp_proto", "otlp_json"]


def samples(messages: list[bytes], encoding: str, config: OtlpConfig = CONFIG
            ) -> list[tuple[str, str, float, float]]:
    builder = SampleBuilder("otlp")
    out = []
    for value in messages:
        found = decode_otlp(value, config, encoding)
        assert found.error is None, found.error
        if encoding == "otlp_json":  # the struct path maps what json_format.Parse gives
            assert repr(found) == repr(reference(value, config))
        out.extend((s.service, s.name, s.ts, round(s.value, 9))
                   for s in builder.samples(found.points))
    return out


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_gauge_points_are_samples(encoding: str) -> None:
    msg = request(({"service.name": "checkout"},
                   [gauge("app.error_ratio", [number(T0, 0.25), number(T0 + 10, 0.5)])]))
    assert samples([encode(msg, encoding)], encoding) == [
        ("checkout", "error_rate", T0, 0.25), ("checkout", "error_rate", T0 + 10, 0.5)]


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_delta_sum_is_a_rate_and_a_ratio(encoding: str) -> None:
    # 100 requests in 10 s, 5 of them 5xx: request_rate 10/s, error_rate 0.05.
    points = [number(T0 + 10, 95, start=T0, **{"http.response.status_code": 200}),
              number(T0 + 10, 5, start=T0, **{"http.response.status_code": 503})]
    msg = request(({"service.name": "checkout"},
                   [counter("http.server.request.count", points, DELTA)]))
    assert sorted(samples([encode(msg, encoding)], encoding)) == [
        ("checkout", "error_rate", T0 + 10, 0.05), ("checkout", "request_rate", T0 + 10, 10.0)]


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_cumulative_sum_with_a_reset(encoding: str) -> None:
    def at(ts: float, value: int, start: float) -> bytes:
        return encode(request(({"service.name": "checkout"}, [counter(
            "http.server.request.count",
            [number(ts, value, start=start, **{"http.response.status_code": 200})],
            CUMULATIVE)])), encoding)

    got = [s for s in samples([
        at(T0, 1000, T0 - 3600),        # primes: no rate from a lifetime total
        at(T0 + 10, 1100, T0 - 3600),   # +100 in 10 s -> 10/s
        at(T0 + 20, 1300, T0 - 3600),   # +200 -> 20/s
        at(T0 + 30, 50, T0 + 25),       # process restarted at T0+25: 50 in 5 s -> 10/s
        at(T0 + 40, 150, T0 + 25),      # +100 -> 10/s
    ], encoding) if s[1] == "request_rate"]
    assert got == [("checkout", "request_rate", T0 + 10, 10.0),
                   ("checkout", "request_rate", T0 + 20, 20.0),
                   ("checkout", "request_rate", T0 + 30, 10.0),
                   ("checkout", "request_rate", T0 + 40, 10.0)]


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_cumulative_reset_without_a_start_time_only_primes(encoding: str) -> None:
    def at(ts: float, value: int) -> bytes:
        return encode(request(({"service.name": "s"}, [counter(
            "http.server.request.count", [number(ts, value)], CUMULATIVE)])), encoding)

    got = [s[3] for s in samples([at(T0, 100), at(T0 + 10, 200), at(T0 + 20, 30),
                                  at(T0 + 30, 60)], encoding) if s[1] == "request_rate"]
    assert got == [10.0, 3.0]  # the reset point (30 < 200) gives nothing; then +30 in 10 s


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_histogram_percentile_is_interpolated(encoding: str) -> None:
    # 1000 requests: 900 in (0, 0.1] s, 90 in (0.1, 0.5], 10 in (0.5, 1]; p99 = rank 990,
    # the last of the (0.1, 0.5] bucket -> 0.5 s = 500 ms.
    msg = request(({"service.name": "checkout"}, [histogram(
        "http.server.request.duration", T0 + 10, T0, [900, 90, 10, 0], [0.1, 0.5, 1.0])]))
    assert samples([encode(msg, encoding)], encoding) == [
        ("checkout", "latency_p99_ms", T0 + 10, 500.0)]


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_cumulative_histogram_uses_the_interval(encoding: str) -> None:
    def at(ts: float, counts: list[int]) -> bytes:
        return encode(request(({"service.name": "s"}, [histogram(
            "http.server.request.duration", ts, T0 - 60, counts, [0.1, 0.5, 1.0],
            CUMULATIVE)])), encoding)

    # Interval counts: [0, 0, 100, 0] -> all in (0.5, 1] s: p99 = 0.5 + 0.5 * 0.99 = 0.995 s.
    got = samples([at(T0, [900, 90, 10, 0]), at(T0 + 10, [900, 90, 110, 0])], encoding)
    assert got == [("s", "latency_p99_ms", T0 + 10, 995.0)]


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_no_recorded_value_is_missing_never_zero(encoding: str) -> None:
    msg = request(({"service.name": "checkout"}, [
        gauge("app.error_ratio", [number(T0, 0.0, flags=NO_VALUE)]),
        histogram("http.server.request.duration", T0, T0 - 10, [0, 0, 0, 0], [0.1, 0.5, 1.0],
                  flags=NO_VALUE),
        counter("http.server.request.count", [number(T0, None, start=T0 - 10,
                                                     flags=NO_VALUE)], DELTA)]))
    builder = SampleBuilder("otlp")
    found = decode_otlp(encode(msg, encoding), CONFIG, encoding)
    assert found.error is None and len(found.points) == 4
    assert builder.samples(found.points) == []
    assert builder.missing == 4


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_many_services_in_one_message_keep_their_order(encoding: str) -> None:
    msg = request(
        ({"service.name": "b", "service.instance.id": "b-1"},
         [gauge("app.error_ratio", [number(T0 + 20, 0.3), number(T0, 0.1)])]),
        ({"service.name": "a"}, [gauge("app.error_ratio", [number(T0 + 10, 0.2)])]),
        ({"service.name": "host-only"}, [gauge("system.cpu.utilization", [number(T0, 1)])]),
    )
    found = decode_otlp(encode(msg, encoding), CONFIG, encoding)
    assert found.unmapped == 1
    out = SampleBuilder("otlp").samples(found.points)
    assert [(s.service, s.ts, s.instance) for s in out] == [
        ("b", T0, "b-1"), ("a", T0 + 10, None), ("b", T0 + 20, "b-1")]


@pytest.mark.parametrize(("value", "encoding", "error"), [
    # not protobuf at all
    (b"\xff\xff\xff", "otlp_proto", "not OTLP protobuf"),
    # JSON where protobuf is expected is still not protobuf
    (b'{"resourceMetrics": 1}', "otlp_json", "not OTLP/JSON"),
])
def test_undecodable_messages_are_refused(value: bytes, encoding: str, error: str) -> None:
    found = decode_otlp(value, CONFIG, encoding)
    assert found.error is not None and error in found.error


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_missing_service_name_is_refused(encoding: str) -> None:
    msg = request(({"host.name": "n1"}, [gauge("app.error_ratio", [number(T0, 0.1)])]))
    found = decode_otlp(encode(msg, encoding), CONFIG, encoding)
    assert found.error is not None and "service.name" in found.error


def test_unmapped_metrics_can_be_dead_letters() -> None:
    strict = OtlpConfig(rules=CONFIG.rules, unmapped="dead_letter")
    msg = request(({"service.name": "a"}, [gauge("other", [number(T0, 1)])]))
    found = decode_otlp(encode(msg, "otlp_proto"), strict)
    assert found.error is not None and "mapped" in found.error


@pytest.mark.parametrize(("p", "counts", "bounds", "expected"), [
    (50, (0, 10, 0), (1.0, 2.0), 1.5),        # middle of the only bucket
    (100, (10, 0, 0), (1.0, 2.0), 1.0),       # top of the first bucket
    (99, (0, 0, 10), (1.0, 2.0), 2.0),        # overflow bucket, no max known: highest bound
    (50, (0, 0, 0), (1.0, 2.0), None),        # no observations: missing, not zero
])
def test_percentile(p: float, counts: tuple[float, ...], bounds: tuple[float, ...],
                    expected: float | None) -> None:
    assert percentile(p, counts, bounds) == expected


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_a_first_error_series_counts_from_zero(encoding: str) -> None:
    # Cumulative counter; the 503 series appears only at T0+20: its 10 errors happened in
    # the last interval, so error_rate = 10 / (100 + 10) over that interval.
    def at(ts: float, ok: int, errors: int | None) -> bytes:
        points = [number(ts, ok, start=T0 - 60, **{"http.response.status_code": 200})]
        if errors is not None:
            points.append(number(ts, errors, start=T0 - 60,
                                 **{"http.response.status_code": 503}))
        return encode(request(({"service.name": "s"}, [
            counter("http.server.request.count", points, CUMULATIVE)])), encoding)

    got = [s for s in samples([at(T0, 100, None), at(T0 + 10, 200, None),
                               at(T0 + 20, 300, 10)], encoding) if s[1] == "error_rate"]
    assert got == [("s", "error_rate", T0 + 10, 0.0),
                   ("s", "error_rate", T0 + 20, round(10 / 110, 9))]


def _foreign(value: bytes, headers: list[tuple[str, bytes]] | None = None,
             reference: float = T0 + 60) -> str | None:
    from rollguard.streams.ingest.inputs import decode_foreign

    decoded = decode_foreign(value, key=None, headers=headers or [], topic="otlp_metrics",
                             partition=0, offset=3, expected="otlp", otlp=CONFIG,
                             reference_time=reference, max_clock_skew_seconds=300,
                             max_message_bytes=1000)
    if decoded.dead_letter is None:
        return None
    assert decoded.dead_letter.value_b64 is not None  # the original bytes are kept
    return decoded.dead_letter.error


GOOD = encode(request(({"service.name": "a"}, [gauge("app.error_ratio", [number(T0, 0.1)])])),
              "otlp_proto")


@pytest.mark.parametrize(("value", "headers", "reference", "error"), [
    # a valid message: no dead letter
    (GOOD, [], T0 + 60, None),
    # the content-type header says JSON: the protobuf bytes are not OTLP/JSON
    (GOOD, [("content-type", b"application/json")], T0 + 60, "not OTLP/JSON"),
    # an oversized batch (16 x max_message_bytes)
    (GOOD + b"\x00" * 20_000, [], T0 + 60, "exceeds 16000"),
    # points far ahead of the wall clock
    (GOOD, [], T0 - 3600, "ahead of the wall clock"),
    # an empty value
    (b"", [], T0 + 60, "empty message"),
])
def test_bad_otlp_messages_become_dead_letters(value: bytes, headers: list[tuple[str, bytes]],
                                               reference: float, error: str | None) -> None:
    got = _foreign(value, headers, reference)
    assert (got is None) if error is None else (got is not None and error in got)


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_unmapped_points_are_counted_by_metric_and_logged_once(encoding: str) -> None:
    from prometheus_client import CollectorRegistry

    from rollguard.streams.ingest.inputs import decode_foreign
    from rollguard.streams.metrics import WorkerMetrics

    registry = CollectorRegistry()
    metrics = WorkerMetrics(registry)
    told: list[list[str]] = []
    msg = request(({"service.name": "a"}, [
        gauge("app.error_ratio", [number(T0, 0.1)]),                 # mapped
        gauge("system.cpu", [number(T0, 1), number(T0 + 1, 2)]),     # two points skipped
        gauge("system.memory", [number(T0, 3)])]))                   # one skipped
    only_unmapped = request(({"service.name": "a"}, [gauge("system.cpu", [number(T0, 1)])]))
    for value in (msg, msg, only_unmapped):
        decoded = decode_foreign(
            encode(value, encoding), key=None, topic="otlp_metrics", partition=0,
            headers=[("content-type", b"application/json")] if encoding == "otlp_json" else [],
            offset=0, expected="otlp", otlp=CONFIG, reference_time=T0 + 60,
            max_clock_skew_seconds=300, max_message_bytes=100_000,
            unmapped=lambda points: told.append(metrics.unmapped(points)))
        assert decoded.dead_letter is None
    assert registry.get_sample_value("rollguard_otlp_unmapped_points_total") == 3 + 3 + 1
    assert told == [["system.cpu", "system.memory"], [], []]  # each name logged once


def test_unmapped_names_remembered_are_bounded() -> None:
    from prometheus_client import CollectorRegistry

    from rollguard.streams.metrics import MAX_UNMAPPED_NAMES, WorkerMetrics

    metrics = WorkerMetrics(CollectorRegistry())
    new = metrics.unmapped({f"m{i}": 1 for i in range(MAX_UNMAPPED_NAMES + 50)})
    assert len(new) == MAX_UNMAPPED_NAMES
    assert metrics.unmapped({"one more": 1}) == []


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_cumulative_values_survive_a_checkpoint(encoding: str) -> None:
    """A new leader restored from a checkpoint gives the first interval's rate (and
    percentile) at once, from the values the old one had checkpointed; a leader without
    them would only prime (no rate), never give a wrong one."""
    from rollguard.models.state import EngineState
    from rollguard.streams.checkpoint import StateLog, restore

    def at(ts: float, total: int, counts: list[int]) -> bytes:
        return encode(request(({"service.name": "s"}, [
            counter("http.server.request.count",
                    [number(ts, total, start=T0 - 60, **{"http.response.status_code": 200})],
                    CUMULATIVE),
            histogram("http.server.request.duration", ts, T0 - 60, counts, [0.1, 0.5],
                      CUMULATIVE)])), encoding)

    def run(builder: SampleBuilder, value: bytes) -> list[tuple[str, float, float]]:
        found = decode_otlp(value, CONFIG, encoding)
        return [(s.name, s.ts, round(s.value, 6)) for s in builder.samples(found.points)]

    old = SampleBuilder("otlp")
    assert run(old, at(T0, 100, [10, 0, 0])) == []  # primes
    entries = StateLog(secret=b"k").entries(EngineState(), [], {}, old.snapshot())
    restored = restore([(i, k, v) for i, (k, v) in enumerate(entries)], [b"k"])
    new = SampleBuilder("otlp")
    new.restore(restored.rates)
    # 50 requests in 10 s, none 5xx; the interval's 10 durations in (0.1, 0.5]: p99 interpolated
    expected = [("error_rate", T0 + 10, 0.0), ("latency_p99_ms", T0 + 10, 496.0),
                ("request_rate", T0 + 10, 5.0)]
    assert sorted(run(new, at(T0 + 10, 150, [10, 10, 0]))) == sorted(expected)
    assert run(SampleBuilder("otlp"), at(T0 + 10, 150, [10, 10, 0])) == []  # without: primes


@pytest.mark.parametrize("data", [
    None, [], {"last": []}, {"last": [[["k"], [None, "x", 1.0]]], "groups": []},
    {"last": [[["k"], [None, 1.0, {"a": 1}]]], "groups": []},
    {"last": [], "groups": [[["g"], [1.0]]]},
])
def test_a_rate_snapshot_that_is_not_one_is_refused(data: object) -> None:
    builder = SampleBuilder("otlp")
    with pytest.raises(ValueError, match="OTLP rate state"):
        builder.restore(data)
