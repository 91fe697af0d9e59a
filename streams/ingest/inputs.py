"""What the worker calls for a message that is not rollguard's own JSON.

- On the OTLP topic (``topics.otlp_metrics``): the message becomes one ``FanOut`` — the mapped
  points of every service in it — that the event-time merger holds and releases *as a unit*, at
  its earliest point's time. At release a ``SampleBuilder`` turns it into ``MetricSample``
  records, oldest first, handed to the core one by one. Releasing a message whole is what keeps
  the input positions exact (a message is handled or not; a restart never replays half of it);
  the price is that its later points enter the core at most the message's time spread early,
  which the allowed lateness absorbs as long as that spread (a Collector batch: its
  ``timeout``, 200 ms by default) stays below it. A service's points stay in event-time order
  across messages as long as its producer writes them in order, keyed or not.
- On ``deploys``, a message with ``ce_*`` headers or a CloudEvents content type is a CDEvent
  (``streams.ingest.cdevents``); everything else there is rollguard's native JSON.

Bad input gives a dead letter with the original bytes; the worker publishes it with the
original headers too.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import Literal

from rollguard.models.events import DeadLetter, format_ts
from rollguard.streams.ingest.cdevents import decode_cdevent, is_cloudevent
from rollguard.streams.ingest.mapping import OtlpConfig
from rollguard.streams.ingest.otlp import decode_otlp, encoding_of
from rollguard.streams.ingest.rates import Point
from rollguard.streams.serde import Decoded, InputRecord

__all__ = ["OTLP_TYPE", "FanOut", "decode_foreign", "header_map", "is_foreign"]

OTLP_TYPE = "otlp"
_TS = attrgetter("ts")

Headers = Sequence[tuple[str, bytes | None]]
"""Kafka message headers as aiokafka gives them: ``((name, value), ...)``."""


@dataclass(frozen=True, slots=True)
class FanOut:
    """The mapped points of one OTLP message (one merger item; see module doc)."""

    points: tuple[Point, ...]
    ts: float
    """Its earliest point's event time."""
    type: Literal["otlp"] = "otlp"
    service: None = None


def header_map(headers: Headers | None) -> dict[str, bytes]:
    """aiokafka's ``((name, value), ...)`` headers as a dict (the last value wins)."""
    out: dict[str, bytes] = {}
    for name, value in headers or ():
        out[str(name).lower()] = value if value is not None else b""
    return out


def is_foreign(expected: str | None, headers: Headers | None) -> bool:
    """True if the message needs ``decode_foreign`` rather than the native decoder."""
    if expected == OTLP_TYPE:
        return True
    return expected == "deploy" and bool(headers) and is_cloudevent(header_map(headers))


def decode_foreign(
    value: bytes | None,
    *,
    key: bytes | None,
    headers: Headers | None,
    topic: str,
    partition: int | None,
    offset: int | None,
    expected: str | None,
    otlp: OtlpConfig,
    reference_time: float,
    max_clock_skew_seconds: float,
    max_message_bytes: int,
    unmapped: Callable[[dict[str, int]], None] | None = None,
) -> Decoded[FanOut | InputRecord]:
    """An OTLP message or a CDEvent → ``Decoded`` (record ``None`` and no dead letter: the
    message had nothing rollguard maps, e.g. only unmapped OTLP metrics).

    ``unmapped`` is told, for a message that is not dead-lettered, how many data points of
    each metric no rule names were skipped."""
    hdrs = header_map(headers)

    def dead(error: str) -> Decoded[FanOut | InputRecord]:
        letter = DeadLetter(topic=topic, partition=partition, offset=offset,
                            key_b64=_b64(key), value_b64=_b64(value), error=error,
                            ts=reference_time)
        return Decoded(None, letter)

    if not value:
        return dead("empty message value (a tombstone or an empty payload is not an event)")
    if expected == OTLP_TYPE:
        # The Collector's batches are bigger than single events: 16x max_message_bytes.
        limit = max_message_bytes * 16
        if len(value) > limit:
            return dead(f"OTLP message of {len(value)} bytes exceeds {limit} "
                        "(16 x max_message_bytes); lower the Collector's batch size")
        found = decode_otlp(value, otlp, encoding_of(hdrs, otlp.encoding))
        if found.error is not None:
            return dead(found.error)
        if found.unmapped_metrics and unmapped is not None:
            unmapped(found.unmapped_metrics)
        if not found.points:
            return Decoded(None, None)
        newest = max(map(_TS, found.points))
        if newest > reference_time + max_clock_skew_seconds:
            return dead(f"a point is {newest - reference_time:.0f} s ahead of the wall clock "
                        f"(max_clock_skew_seconds={max_clock_skew_seconds:g}, at "
                        f"{format_ts(newest)}); check the producer's clock")
        fan = FanOut(tuple(found.points), min(map(_TS, found.points)))
        return Decoded(fan, None)
    if len(value) > max_message_bytes:
        return dead(f"message of {len(value)} bytes exceeds max_message_bytes={max_message_bytes}")
    event = decode_cdevent(value, hdrs, key)
    if isinstance(event, str):
        return dead(event)
    if event.ts > reference_time + max_clock_skew_seconds:
        return dead(f"ts is {event.ts - reference_time:.0f} s ahead of the reference clock "
                    f"(max_clock_skew_seconds={max_clock_skew_seconds:g}); check the "
                    "producer's clock")
    if key is not None and key != event.service.encode():
        return dead(f"key {key.decode('utf-8', 'replace')!r} does not match service "
                    f"{event.service!r}")
    return Decoded(event, None)


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode("ascii")
