"""The struct path of OTLP/JSON (``streams/ingest/otlp_json.py``) maps exactly what
``json_format.Parse(..., ignore_unknown_fields=True)`` maps — the same points, or the same
error — on OTLP/JSON as the Collector writes it and on every variant the proto3 JSON mapping
allows or refuses."""

from __future__ import annotations

import copy
import random
from typing import Any
from unittest import mock

import orjson
import pytest
from google.protobuf import json_format

from rollguard.streams.ingest import otlp
from rollguard.streams.ingest.mapping import MetricRule, OtlpConfig
from rollguard.streams.ingest.otlp import OtlpDecoded, decode_otlp
from rollguard.streams.ingest.otlp_json import Unsure
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

T0 = 1_795_593_600.0
CONFIG = OtlpConfig(rules=(
    MetricRule(source="app.latency", metric="latency_p99_ms", where={"env": "prod"}),
    MetricRule(source="app.requests", metric="request_rate", kind="counter"),
    MetricRule(source="app.requests", metric="error_rate", kind="counter",
               errors_where={"status": "5.."}),
    MetricRule(source="app.total", metric="request_rate", kind="counter"),
    MetricRule(source="app.duration", metric="latency_p99_ms", kind="histogram",
               percentile=99),
))


def reference(text: bytes, config: OtlpConfig = CONFIG) -> OtlpDecoded:
    """``decode_otlp`` with the official classes filled by ``json_format.Parse``."""
    def refuse(*_: Any) -> Any:
        raise Unsure

    with mock.patch.object(otlp, "decoder", refuse):
        return decode_otlp(text, config, "otlp_json")


def same(text: bytes, config: OtlpConfig = CONFIG) -> None:
    expected, got = reference(text, config), decode_otlp(text, config, "otlp_json")
    assert repr(got) == repr(expected), (text[:300], expected, got)  # repr: NaN is NaN


def golden() -> Any:
    return request(
        ({"service.name": "payments", "service.instance.id": "i-1"}, [
            gauge("app.latency", [number(T0, 12.5, env="prod", shard=3)]),
            counter("app.requests", [number(T0, 40, start=T0 - 10, status="500")], DELTA),
            counter("app.total", [number(T0, 7, start=T0 - 60, flags=NO_VALUE)], CUMULATIVE),
            histogram("app.duration", T0, T0 - 10, [1, 5, 3, 0], [10.0, 50.0, 250.0])]),
        ({"service.name": "search"}, [gauge("app.latency", [number(T0, -0.25)])]))


@pytest.mark.parametrize("enums", ["integers", "names"])
def test_the_collectors_encoding_and_names(enums: str) -> None:
    message = golden()
    same(encode(message, "otlp_json"))
    same(json_format.MessageToJson(message, use_integers_for_enums=enums == "integers",
                                   preserving_proto_field_name=True).encode())
    assert reference(encode(message, "otlp_json")).points  # the check maps something


def _dict() -> dict[str, Any]:
    return orjson.loads(encode(golden(), "otlp_json"))


def _point(js: dict[str, Any]) -> dict[str, Any]:
    return js["resourceMetrics"][0]["scopeMetrics"][0]["metrics"][0]["gauge"]["dataPoints"][0]


def _metric(js: dict[str, Any]) -> dict[str, Any]:
    return js["resourceMetrics"][0]["scopeMetrics"][0]["metrics"][1]


VARIANTS: dict[str, Any] = {
    "int64 as a number": lambda js: _point(js).update(timeUnixNano=1795593600000000000),
    "int64 as a float": lambda js: _point(js).update(timeUnixNano=1.5e18),
    "int64 as a fraction": lambda js: _point(js).update(timeUnixNano=1.5),
    "int64 with a sign": lambda js: _point(js).update(timeUnixNano="-5"),
    "int64 with spaces": lambda js: _point(js).update(timeUnixNano=" 5"),
    "int64 as exponent text": lambda js: _point(js).update(timeUnixNano="1e3"),
    "int64 as a bool": lambda js: _point(js).update(timeUnixNano=True),
    "uint64 negative": lambda js: _point(js).update(timeUnixNano=-1),
    "uint64 too large": lambda js: _point(js).update(timeUnixNano=str(2**64)),
    "uint32 too large": lambda js: _point(js).update(flags=2**33),
    "double as text": lambda js: _point(js).update(asDouble="1.5"),
    "double NaN text": lambda js: _point(js).update(asDouble="NaN"),
    "double Infinity text": lambda js: _point(js).update(asDouble="-Infinity"),
    "double as an int": lambda js: _point(js).update(asDouble=3),
    "double as a bool": lambda js: _point(js).update(asDouble=False),
    "string as a number": lambda js: _metric(js).update(name=5),
    "unknown field": lambda js: _point(js).update(exemplarz=[1, {"a": None}]),
    "extension-like key": lambda js: _point(js).update({"[foo.bar]": 1}),
    "null field": lambda js: _point(js).update(asDouble=None),
    "null message": lambda js: _metric(js).update(sum=None),
    "null in a list": lambda js: js["resourceMetrics"].append(None),
    "list instead of message": lambda js: _metric(js).update(sum=[]),
    "message instead of list": lambda js: js.update(resourceMetrics={}),
    "number instead of message": lambda js: js.update(resourceMetrics=[1]),
    "both spellings": lambda js: _point(js).update(time_unix_nano="7"),
    "both spellings of a message": lambda js: js["resourceMetrics"][0]["scopeMetrics"][0][
        "metrics"].append({"name": "e", "exponentialHistogram": {"dataPoints": []},
                           "exponential_histogram": {"aggregationTemporality": 1}}),
    "both spellings of a list": lambda js: _metric(js)["sum"].update(data_points=[]),
    "two oneof members": lambda js: _point(js).update(asInt="3"),
    "two oneof members, one null": lambda js: _point(js).update(asInt=None),
    "enum by name": lambda js: _metric(js)["sum"].update(
        aggregationTemporality="AGGREGATION_TEMPORALITY_DELTA"),
    "enum unknown name": lambda js: _metric(js)["sum"].update(aggregationTemporality="NOPE"),
    "enum unknown number": lambda js: _metric(js)["sum"].update(aggregationTemporality=77),
    "enum as text number": lambda js: _metric(js)["sum"].update(aggregationTemporality="1"),
    "bool as text": lambda js: _metric(js)["sum"].update(isMonotonic="true"),
    "bytes value": lambda js: _point(js)["attributes"].append(
        {"key": "b", "value": {"bytesValue": "aGVsbG8_"}}),
    "nested any value": lambda js: _point(js)["attributes"].append(
        {"key": "k", "value": {"kvlistValue": {"values": [
            {"key": "x", "value": {"arrayValue": {"values": [{"intValue": "1"},
                                                             {"boolValue": True}]}}}]}}}),
    "empty message": lambda js: _metric(js).update(sum={}),
    "top level list": lambda js: [js],
    "nesting within the depth limit": lambda js: _point(js)["attributes"].append(
        {"key": "deep", "value": _deep(28)}),
    "nesting beyond the depth limit": lambda js: _point(js)["attributes"].append(
        {"key": "deep", "value": _deep(40)}),
}


def _deep(levels: int) -> dict[str, Any]:
    value: dict[str, Any] = {"intValue": "1"}
    for _ in range(levels):
        value = {"kvlistValue": {"values": [{"key": "k", "value": value}]}}
    return value


@pytest.mark.parametrize("name", list(VARIANTS))
def test_every_variant_parses_or_fails_as_json_format(name: str) -> None:
    js = _dict()
    changed = VARIANTS[name](js)
    same(orjson.dumps(changed if changed is not None else js))


@pytest.mark.parametrize("text", [b"", b"{", b"\xff\xfe", b'{"resourceMetrics": NaN}',
                                  b'"\\ud800"', b"[]", b"null", b"1",
                                  b'{"resourceMetrics": [{"resource": {"attributes": '
                                  b'[{"key": "a", "value": {"doubleValue": 1e999}}]}}]}'])
def test_text_orjson_refuses_goes_to_json_format(text: bytes) -> None:
    same(text)


def test_random_field_drops_and_null_fields_agree() -> None:
    rng = random.Random(7)
    base = _dict()
    for _ in range(200):
        js = copy.deepcopy(base)
        node: Any = js
        for _ in range(rng.randint(1, 8)):  # walk somewhere into the message
            if isinstance(node, dict) and node:
                key = rng.choice(list(node))
                if rng.random() < 0.2:
                    node[key] = rng.choice([None, "x", 1, [], {}, 2.5, True])
                    break
                node = node[key]
            elif isinstance(node, list) and node:
                node = rng.choice(node)
        same(orjson.dumps(js))


def test_the_collectors_encoding_takes_the_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    text = encode(golden(), "otlp_json")
    expected = reference(text)

    def refuse(*_: Any, **__: Any) -> None:
        raise AssertionError("fell back to json_format")

    monkeypatch.setattr(json_format, "Parse", refuse)
    assert decode_otlp(text, CONFIG, "otlp_json") == expected


def test_the_same_points_as_from_protobuf() -> None:
    message = golden()
    assert decode_otlp(encode(message, "otlp_json"), CONFIG, "otlp_json") == \
        decode_otlp(encode(message, "otlp_proto"), CONFIG, "otlp_proto")
