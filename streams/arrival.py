"""The broker's time of an approval response (DESIGN §6: arrival order, not the signer's claim).

``rollback.approval-responses`` is created with ``message.timestamp.type=LogAppendTime``
(streams/topics.py), so each record's Kafka timestamp is the moment the broker appended it.
The worker hands the core that time as the response's ``received_at``; ``rollguard export``
writes it into the replay line, so that replay orders and times responses as the worker did.
A response on a topic that keeps the producer's ``CreateTime`` has no trustworthy arrival time:
it is refused (a dead letter), never ordered by a time its sender chose.

>>> line = with_arrival(b'{"type":"approval_response","ts":1}', 1795593600.5)
>>> line
b'{"type":"approval_response","ts":1,"received_at":1795593600.5}'
>>> arrival_of(1795593600500, LOG_APPEND_TIME)
1795593600.5
>>> arrival_of(1795593600500, 0) is None
True
"""

from __future__ import annotations

import base64
from typing import Any

import orjson

from rollguard.models.events import DeadLetter

__all__ = [
    "CREATE_TIME_ERROR", "LOG_APPEND_TIME", "arrival_of", "dead_letter_for", "stamp_arrival",
    "with_arrival",
]

LOG_APPEND_TIME = 1
"""Kafka's timestamp type of a record stamped by the broker (0 is the producer's CreateTime)."""

CREATE_TIME_ERROR = (
    "approval response without the broker's arrival time: its topic keeps the producer's "
    "CreateTime; set message.timestamp.type=LogAppendTime (`rollguard topics create` does)"
)


def arrival_of(timestamp_ms: int, timestamp_type: int) -> float | None:
    """The broker's arrival time (epoch seconds) of a record, or None if the broker did not
    stamp it."""
    if timestamp_type != LOG_APPEND_TIME or timestamp_ms < 0:
        return None
    return timestamp_ms / 1000.0


def dead_letter_for(message: Any, error: str, reference: float) -> DeadLetter:
    """A consumed Kafka message refused after decoding, with its original bytes."""
    return DeadLetter(
        topic=message.topic, partition=message.partition, offset=message.offset,
        key_b64=None if message.key is None else base64.b64encode(message.key).decode(),
        value_b64=base64.b64encode(message.value).decode(), error=error, ts=reference,
    )


def with_arrival(value: bytes, received_at: float) -> bytes:
    """The message as one replay line with ``received_at`` set (any value it had replaced)."""
    data = orjson.loads(value)
    data.pop("received_at", None)
    data["received_at"] = received_at
    return orjson.dumps(data)


def stamp_arrival(record: Any, message: Any, reference: float) -> tuple[Any, DeadLetter | None]:
    """An approval response with the broker's arrival time, or a dead letter if the broker
    did not stamp it (streams/arrival.py). Whatever ``received_at`` the sender wrote is
    replaced."""
    received_at = arrival_of(message.timestamp, message.timestamp_type)
    if received_at is None:
        return None, dead_letter_for(message, CREATE_TIME_ERROR, reference)
    return record.model_copy(update={"received_at": received_at}), None
