"""Decoding: every kind of bad input becomes a dead letter with its original bytes."""

from __future__ import annotations

import base64

import pytest

from rollguard.models.events import MetricSample
from rollguard.streams.serde import decode, decode_line, encode

NOV25 = 1795593600.0
GOOD = b'{"type":"metric","service":"a","name":"error_rate","value":0.1,"ts":1795593600}'

# (case id, key, value, expected_type, fragment of the error)
BAD_INPUT = [
    ("invalid-json", b"a", b'{"type":"metric",', None, "not valid JSON"),
    ("wrong-type", b"a", GOOD.replace(b"0.1", b'"high"'), None, "metric.value"),
    ("missing-field", b"a", GOOD.replace(b'"name":"error_rate",', b""), None, "metric.name"),
    ("nan", b"a", GOOD.replace(b"0.1", b"NaN"), None, "finite"),
    ("infinity", b"a", GOOD.replace(b"0.1", b"1e999"), None, "finite"),
    ("unknown-type", b"a", b'{"type":"trace","service":"a"}', None, "unknown type 'trace'"),
    ("no-type", b"a", b'{"service":"a"}', None, "missing field 'type'"),
    ("oversize", b"a", GOOD + b" " * 300_000, None, "exceeds max_message_bytes"),
    ("far-future", b"a", GOOD.replace(b"1795593600", b"1795603600"), None, "ahead of"),
    ("non-utf8", b"a", GOOD.replace(b'"a"', b'"\xff"'), None, "not UTF-8"),
    ("empty", b"a", b"", None, "empty message"),
    ("wrong-key", b"b", GOOD, None, "does not match service"),
    ("no-key", None, GOOD, None, "missing key"),
    ("wrong-topic", b"a", GOOD, "alert", "does not belong on topic"),
    ("not-an-object", b"a", b"[1,2,3]", None, "object"),
    ("bad-enum", b"a", b'{"type":"alert","alert_id":"x","service":"a","name":"n",'
     b'"severity":"boom","status":"firing","ts":1795593600}', None, "severity"),
    ("naive-time", b"a", GOOD.replace(b"1795593600", b'"2026-11-25T08:00:00"'), None,
     "no time zone"),
]


@pytest.mark.parametrize(("case", "key", "value", "expected_type", "fragment"), BAD_INPUT,
                         ids=[c[0] for c in BAD_INPUT])
def test_bad_input_becomes_a_dead_letter_with_original_bytes(
    case: str, key: bytes | None, value: bytes, expected_type: str | None, fragment: str
) -> None:
    decoded = decode(value, key=key, topic="t", partition=3, offset=42,
                     expected_type=expected_type, reference_time=NOV25)
    assert decoded.record is None
    letter = decoded.dead_letter
    assert letter is not None
    assert fragment in letter.error, letter.error
    assert letter.value_b64 is not None or value == b""
    assert base64.b64decode(letter.value_b64 or "") == value
    assert (letter.key_b64 is None) == (key is None)
    assert (letter.topic, letter.partition, letter.offset) == ("t", 3, 42)


def test_good_input_decodes_and_round_trips() -> None:
    decoded = decode(GOOD, key=b"a", expected_type="metric", reference_time=NOV25)
    assert isinstance(decoded.record, MetricSample)
    assert decoded.dead_letter is None
    again = decode(encode(decoded.record), key=b"a")
    assert again.record == decoded.record


def test_skew_is_measured_from_the_reference_clock_only_when_there_is_one() -> None:
    future = GOOD.replace(b"1795593600", b"1895593600")
    assert decode(future, key=b"a").record is not None  # replay's first line: no reference
    assert decode(future, key=b"a", reference_time=NOV25).dead_letter is not None


def test_replay_lines_refuse_output_records_by_name() -> None:
    decoded = decode_line(b'{"type":"decision","service":"a"}', line_number=7, source="f.jsonl")
    assert decoded.dead_letter is not None
    assert "output record" in decoded.dead_letter.error
    assert decoded.dead_letter.offset == 7
