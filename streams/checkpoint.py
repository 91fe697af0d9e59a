"""What the worker writes to its changelog, and how it reads it back.

The worker's state topic ``{app_id}-state-changelog`` is compacted and keyed:

- ``svc:<name>`` — one service's ``ServiceState`` (windows, ring, baselines, detectors, the
  deployment on trial), written when it changed;
- ``fleet`` — the ``FleetState`` (event-time clock, scheduled control events, breaches per
  window, the rollback budget's history, approval requests);
- ``positions`` — for each input partition, the offset to resume reading from and the offsets
  at or above it that were already handled (released to the core or dead-lettered).

Every checkpoint is one Kafka transaction that also carries the output records decided since
the previous one, so that state, outputs and input positions move together: after a crash the
new leader sees the last committed checkpoint and nothing of the aborted one (DESIGN §2).

Values are a one-byte format version followed by a pickle. The state topic must be writable
only by the worker's principal (ACLs): a pickle from an untrusted writer is code execution.
"""

from __future__ import annotations

import hashlib
import pickle
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from models.engine import EngineState
from models.state import FleetState, ServiceState

__all__ = ["FORMAT", "Positions", "Restored", "encode_state", "restore"]

FORMAT = b"\x01"
SERVICE_PREFIX = b"svc:"
FLEET_KEY = b"fleet"
POSITIONS_KEY = b"positions"

TopicPartition = tuple[str, int]


@dataclass
class Positions:
    """Which input messages the core has seen, per partition, in a form that survives a crash.

    The merger holds events back until the watermark passes them, so "the next offset to read"
    is not where a restart may resume: events read but still buffered were not handled. A
    partition resumes at its lowest buffered offset (or the next unread one); the few offsets
    above that which were already handled — a partition's events are not strictly in event
    time — are listed, and skipped when read again.
    """

    next_offset: dict[TopicPartition, int] = field(default_factory=dict)
    handled: defaultdict[TopicPartition, list[int]] = field(
        default_factory=lambda: defaultdict(list)
    )
    """Offsets handled since the last checkpoint (plus those kept by it), per partition."""
    skip: dict[TopicPartition, set[int]] = field(default_factory=dict)
    """Offsets restored from the last checkpoint that must not be handled twice."""

    def read(self, tp: TopicPartition, offset: int) -> None:
        self.next_offset[tp] = offset + 1

    def done(self, tp: TopicPartition, offset: int) -> None:
        self.handled[tp].append(offset)

    def seen(self, tp: TopicPartition, offset: int) -> bool:
        """True if the message at ``offset`` was handled before the last restart."""
        skip = self.skip.get(tp)
        return skip is not None and offset in skip

    def snapshot(self, buffered: Iterable[tuple[TopicPartition, int]]) -> dict[str, Any]:
        """The positions to persist, given the (partition, offset) of every buffered event."""
        lowest: dict[TopicPartition, int] = {}
        for tp, offset in buffered:
            if offset < lowest.get(tp, offset + 1):
                lowest[tp] = offset
        out: dict[str, Any] = {}
        for tp, next_offset in self.next_offset.items():
            resume = lowest.get(tp, next_offset)
            kept = sorted({o for o in self.handled.get(tp, ()) if o >= resume})
            self.handled[tp] = kept
            out[f"{tp[0]}\x00{tp[1]}"] = [resume, kept]
        return out

    @classmethod
    def from_snapshot(cls, data: dict[str, Any]) -> Positions:
        positions = cls()
        for name, (resume, kept) in data.items():
            topic, _, partition = name.rpartition("\x00")
            tp = (topic, int(partition))
            positions.next_offset[tp] = int(resume)
            positions.handled[tp] = [int(o) for o in kept]
            positions.skip[tp] = {int(o) for o in kept}
        return positions


@dataclass
class Restored:
    """What a new leader starts from: the engine state and where to resume each input."""

    state: EngineState
    positions: Positions
    digests: dict[bytes, bytes]
    """Digest of each entry as last written, so unchanged entries are not written again."""


def _value(obj: Any) -> bytes:
    return FORMAT + pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)


def _load(value: bytes) -> Any:
    if value[:1] != FORMAT:
        raise ValueError(f"state entry in unknown format {value[:1]!r}")
    return pickle.loads(value[1:])  # noqa: S301 - our own topic, writable by the worker only


def digest(value: bytes) -> bytes:
    return hashlib.blake2b(value, digest_size=16).digest()


def encode_state(
    state: EngineState,
    names: Iterable[str],
    positions: dict[str, Any],
    digests: dict[bytes, bytes],
) -> list[tuple[bytes, bytes]]:
    """The changelog entries of one checkpoint: the services in ``names`` whose bytes changed
    since last written (``digests`` is updated), the fleet and the positions."""
    entries: list[tuple[bytes, bytes]] = []
    for name in names:
        svc = state.services.get(name)
        if svc is None:
            continue
        key = SERVICE_PREFIX + name.encode()
        value = _value(svc)
        mark = digest(value)
        if digests.get(key) != mark:
            digests[key] = mark
            entries.append((key, value))
    entries.append((FLEET_KEY, _value(state.fleet)))
    entries.append((POSITIONS_KEY, FORMAT + orjson.dumps(positions)))
    return entries


def restore(entries: Iterable[tuple[bytes, bytes | None]]) -> Restored:
    """Rebuild the state from the changelog's entries, oldest first (later ones win)."""
    latest: dict[bytes, bytes] = {}
    for key, value in entries:
        if value is None:
            latest.pop(key, None)  # a tombstone
        else:
            latest[key] = value
    state = EngineState()
    digests: dict[bytes, bytes] = {}
    positions = Positions()
    for key, value in latest.items():
        if key.startswith(SERVICE_PREFIX):
            svc: ServiceState = _load(value)
            state.services[svc.name] = svc
            digests[key] = digest(value)
        elif key == FLEET_KEY:
            fleet: FleetState = _load(value)
            state.fleet = fleet
        elif key == POSITIONS_KEY:
            positions = Positions.from_snapshot(orjson.loads(value[1:]))
    missing = [name for name in state.fleet.order if name not in state.services]
    if missing:
        raise ValueError(f"state changelog is inconsistent: no entry for services {missing[:5]}")
    return Restored(state=state, positions=positions, digests=digests)
