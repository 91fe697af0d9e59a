"""CloudEvents binary-mode headers for rollguard's output records (Kafka binding, v1.0).

Every record the worker publishes carries ``ce_specversion``, ``ce_id``, ``ce_source``,
``ce_type`` (``dev.rollguard.<record type>``, e.g. ``dev.rollguard.rollback_command``),
``ce_subject`` (the service), ``ce_time`` (the record's own time) and
``content-type: application/json``; the value stays the JSON record of DESIGN §3, so consumers
that ignore headers see no change. ``ce_id`` is a digest of the value: a record re-emitted
after a restart (same bytes) is recognisably the same event.
"""

from __future__ import annotations

import hashlib
from typing import Any

from rollguard.models.events import format_ts

__all__ = ["CE_TYPE_PREFIX", "cloudevent_headers"]

CE_TYPE_PREFIX = "dev.rollguard."
_TIME_FIELDS = ("ts", "issued_at")


def cloudevent_headers(record: Any, value: bytes, source: str) -> list[tuple[str, bytes]]:
    """The binary-mode headers of one output record (``value``: its published bytes)."""
    headers = [
        ("ce_specversion", b"1.0"),
        ("ce_id", hashlib.blake2b(value, digest_size=16).hexdigest().encode()),
        ("ce_source", source.encode()),
        ("ce_type", (CE_TYPE_PREFIX + str(record.type)).encode()),
        ("content-type", b"application/json"),
    ]
    service = getattr(record, "service", None)
    if service:
        headers.append(("ce_subject", str(service).encode()))
    for name in _TIME_FIELDS:
        when = getattr(record, name, None)
        if isinstance(when, int | float) and when > 0:
            headers.append(("ce_time", format_ts(float(when)).encode()))
            break
        if isinstance(when, str) and when:
            headers.append(("ce_time", when.encode()))
            break
    return headers
