"""Bytes ↔ records. Decoding returns a record *or* a dead letter; it never raises on input.

Bad input is a second output, not an exception: every way a message can be wrong (not UTF-8,
not JSON, wrong shape, non-finite numbers, unknown ``type``, too big, too far in the future, a
key that is not its service) yields a ``DeadLetter`` that keeps the original key and value bytes
(base64) and says what was wrong in words a producer's owner can act on.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import orjson
from pydantic import TypeAdapter, ValidationError

from rollguard.models.events import (
    INPUT_TYPES,
    Alert,
    ApprovalResponse,
    DeadLetter,
    DeployEvent,
    InputEvent,
    MetricSample,
)

__all__ = [
    "Decoded",
    "InputRecord",
    "decode",
    "decode_line",
    "dumps",
    "encode",
    "record_to_dict",
]

InputRecord = DeployEvent | MetricSample | Alert | ApprovalResponse

_ADAPTER: TypeAdapter[InputRecord] = TypeAdapter(InputEvent)
_BY_TYPE: dict[str, TypeAdapter[InputRecord]] = {
    name: TypeAdapter(model) for name, model in INPUT_TYPES.items()
}


RecordT = TypeVar("RecordT", covariant=True)
"""What a decoder yields: ``InputRecord`` here, also a ``FanOut`` for OTLP (streams.ingest)."""


@dataclass(frozen=True, slots=True)
class Decoded(Generic[RecordT]):
    """The outcome of decoding one message: exactly one of ``record`` and ``dead_letter``.

    ``too_early`` is set beside a dead letter whose only fault is an event time too far ahead
    of the reference clock: the valid record, for a caller that has reason to believe the clock
    (replay, after a quiet gap in the file).
    """

    record: RecordT | None
    dead_letter: DeadLetter | None
    too_early: InputRecord | None = None


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode("ascii")


def _describe(err: ValidationError, expected_type: str | None = None, topic: str = "") -> str:
    if expected_type:
        for item in err.errors(include_url=False):
            if item["loc"] == ("type",) and item["type"] == "literal_error":
                if item.get("input") not in INPUT_TYPES:
                    return (
                        f"unknown type {item.get('input')!r}; topic {topic!r} carries "
                        f"{expected_type!r} records"
                    )
                return (
                    f"type {item.get('input')!r} does not belong on topic {topic!r} "
                    f"(it carries {expected_type!r} records)"
                )
    parts = []
    for item in err.errors(include_url=False):
        loc = ".".join(str(p) for p in item["loc"]) or "value"
        kind = item["type"]
        if kind == "json_invalid":
            parts.append(f"not valid JSON: {item['ctx'].get('error', item['msg'])}")
            continue
        if kind == "union_tag_invalid":
            tag = item.get("ctx", {}).get("tag")
            if tag in _OUTPUT_TYPES:
                parts.append(f"type {tag!r} is an output record of rollguard, not an input event")
                continue
            parts.append(
                f"unknown type {tag!r}; expected one of " + ", ".join(sorted(INPUT_TYPES))
            )
            continue
        if kind == "union_tag_not_found":
            parts.append("missing field 'type' (one of " + ", ".join(sorted(INPUT_TYPES)) + ")")
            continue
        got = item.get("input")
        shown = "" if kind == "missing" or isinstance(got, dict) else f" (got {got!r:.80})"
        parts.append(f"{loc}: {item['msg']}{shown}")
    return "; ".join(parts)


def _problem_before_parsing(value: bytes | None, max_bytes: int) -> str | None:
    if value is None or len(value) == 0:
        return "empty message value (a tombstone or an empty payload is not an event)"
    if len(value) > max_bytes:
        return f"message of {len(value)} bytes exceeds max_message_bytes={max_bytes}"
    return None


def _utf8_problem(value: bytes) -> str | None:
    try:
        value.decode("utf-8")
    except UnicodeDecodeError as err:
        return f"value is not UTF-8 (invalid byte at offset {err.start})"
    return None


def decode(
    value: bytes | None,
    *,
    key: bytes | None = None,
    topic: str = "",
    partition: int | None = None,
    offset: int | None = None,
    expected_type: str | None = None,
    check_key: bool = True,
    reference_time: float | None = None,
    max_clock_skew_seconds: float = 300.0,
    max_message_bytes: int = 262144,
) -> Decoded[InputRecord]:
    """Decode one Kafka message (or replay line) into a record or a dead letter.

    ``expected_type`` restricts the record type (each input topic carries one type).
    ``reference_time`` is the wall clock in the worker and the newest event time seen in replay;
    an event more than ``max_clock_skew_seconds`` ahead of it is refused.
    """

    def dead(error: str, too_early: InputRecord | None = None) -> Decoded[InputRecord]:
        letter = DeadLetter(
            topic=topic,
            partition=partition,
            offset=offset,
            key_b64=_b64(key),
            value_b64=_b64(value),
            error=error,
            ts=reference_time if reference_time is not None else 0.0,
        )
        return Decoded(None, letter, too_early)

    problem = _problem_before_parsing(value, max_message_bytes)
    if problem:
        return dead(problem)
    assert value is not None
    adapter = _BY_TYPE[expected_type] if expected_type else _ADAPTER
    try:
        record = adapter.validate_json(value)
    except ValidationError as err:
        return dead(_utf8_problem(value) or _describe(err, expected_type, topic))
    if reference_time is not None and record.ts > reference_time + max_clock_skew_seconds:
        ahead = record.ts - reference_time
        return dead(
            f"ts is {ahead:.0f} s ahead of the reference clock "
            f"(max_clock_skew_seconds={max_clock_skew_seconds:g}); check the producer's clock",
            too_early=record,
        )
    if check_key:
        service = getattr(record, "service", None)
        if key is None:
            return dead("missing key: the key must be the service name (UTF-8)")
        try:
            key_text = key.decode("utf-8")
        except UnicodeDecodeError:
            return dead("key is not UTF-8: the key must be the service name")
        if service is not None and key_text != service:
            return dead(f"key {key_text!r} does not match service {service!r}")
    return Decoded(record, None)


def decode_line(
    line: bytes,
    *,
    line_number: int | None = None,
    source: str = "",
    reference_time: float | None = None,
    max_clock_skew_seconds: float = 300.0,
    max_message_bytes: int = 262144,
) -> Decoded[InputRecord]:
    """Decode one line of a replay file (DESIGN §9): any input type, no key to check."""
    return decode(
        line,
        topic=source,
        offset=line_number,
        check_key=False,
        reference_time=reference_time,
        max_clock_skew_seconds=max_clock_skew_seconds,
        max_message_bytes=max_message_bytes,
    )


_OUTPUT_TYPES = frozenset(
    {"decision", "rollback_command", "approval_request", "release_verdict", "dead_letter"}
)


def record_to_dict(record: Any) -> dict[str, Any]:
    """A record as JSON-ready data (times rendered as the schema says)."""
    data: dict[str, Any] = record.model_dump(mode="json")
    return data


def dumps(data: Any, *, sort_keys: bool = False) -> bytes:
    """orjson bytes; ``sort_keys`` gives the canonical form used for signatures."""
    option = orjson.OPT_SORT_KEYS if sort_keys else 0
    return orjson.dumps(data, option=option)


def encode(record: Any) -> bytes:
    """A record as the JSON bytes rollguard publishes."""
    return orjson.dumps(record_to_dict(record))
