"""What the worker writes to its changelog, and how it reads it back — as authenticated data.

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

A value is ``FORMAT`` (one byte, the format version), an HMAC-SHA256 (32 bytes) and a JSON
payload. The MAC is keyed by a secret only the gate holds (``state_secret``) and covers the
version, the record's key and the payload, so a record cannot be forged, altered or moved to
another key. The payload is plain data (``streams/statecodec.py``: the dataclasses' own
annotations say what may be built; no pickle), and carries the number of the checkpoint that
wrote it: the ``positions`` record lists, per service, the checkpoint that last wrote it, so
that a replayed older record, a deleted one or a mix of two checkpoints is noticed too.

- ``emitted`` — the outputs published since the last checkpoint without one (an *output
  transaction*: a decision need not wait for the state of every service that changed),
  each as the number of the last checkpoint taken before it and a digest of its bytes. A
  leader that restores checkpoint ``n`` re-derives the ones numbered ``n`` or later from the
  inputs and drops each of them instead of publishing it a second time (docs/worker.md,
  "Outputs before the state").

``restore`` takes, per key, the latest record that authenticates; a refused record (bad MAC,
unknown or retired format, undecodable) is reported, never executed, and repaired by the next
checkpoint (its key is written again, or tombstoned if it was never ours). If what is left is
not one consistent checkpoint, ``StateRefused`` says why and the worker does not lead
(docs/worker.md, "State records").
"""

from __future__ import annotations

import hashlib
import hmac
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from rollguard.models.anomaly import JointDetector, WindowDetector
from rollguard.models.engine import EngineState
from rollguard.models.events import ApprovalResponse, DeployEvent
from rollguard.models.memory import LongMemory
from rollguard.models.records import At
from rollguard.models.state import ApprovalCheck, FleetState, ServiceState
from rollguard.streams.statecodec import StateCodec, StateDecodeError

__all__ = [
    "FORMAT",
    "Positions",
    "Refusal",
    "Restored",
    "StateLog",
    "StateRefused",
    "restore",
    "output_digest",
    "state_schema",
    "state_secret",
]

FORMAT = b"\x02"
PICKLE_FORMAT = b"\x01"
MAC_BYTES = 32
SERVICE_PREFIX = b"svc:"
FLEET_KEY = b"fleet"
POSITIONS_KEY = b"positions"
EMITTED_KEY = b"emitted"

Emitted = list[tuple[int, str]]
"""Outputs published outside a checkpoint: (the last checkpoint taken before it, its digest)."""

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
    fleet: dict[str, Any] | None = None
    """A slot's fleet barrier at the checkpoint (``streams.fleet_topic.barrier_snapshot``)."""

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
        if self.fleet is not None:
            out["fleet"] = self.fleet
        return out

    @classmethod
    def from_snapshot(cls, data: dict[str, Any]) -> Positions:
        positions = cls()
        data = dict(data)
        positions.fleet = data.pop("fleet", None)
        for name, (resume, kept) in data.items():
            topic, _, partition = name.rpartition("\x00")
            tp = (topic, int(partition))
            positions.next_offset[tp] = int(resume)
            positions.handled[tp] = [int(o) for o in kept]
            positions.skip[tp] = {int(o) for o in kept}
        return positions


CODEC = StateCodec(
    [ServiceState, FleetState],
    # What the fleet's timeline holds where its annotation says Any (control-event payloads).
    allowed=[DeployEvent, ApprovalResponse, ApprovalCheck, At],
    detectors=[WindowDetector, JointDetector, LongMemory],
)
"""The one codec of the state: every class it may build is reachable from these."""


def state_schema() -> dict[str, Any]:
    """JSON Schema of the ``data`` of ``svc:*`` and ``fleet`` records (format 2)."""
    schema = CODEC.schema({"service": ServiceState, "fleet": FleetState})
    schema["$id"] = "https://rollguard.dev/schemas/state-v2.schema.json"
    return schema


def state_secret(app_id: str, material: bytes) -> bytes:
    """The MAC key of ``app_id``'s state records: HKDF-SHA256 of secret ``material`` (the gate's
    Ed25519 private key, or the state key file), bound to the app id so that two apps sharing a
    key cannot exchange records."""
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=b"rollguard state-changelog",
                info=b"v2\x00" + app_id.encode())
    return hkdf.derive(material)


def key_material(private_key: Any) -> bytes:
    """The raw bytes of an Ed25519 private key (HKDF input; never logged or written)."""
    raw: bytes = private_key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
        serialization.NoEncryption())
    return raw


def _mac(secret: bytes, key: bytes, payload: bytes) -> bytes:
    message = FORMAT + len(key).to_bytes(4, "big") + key + payload
    return hmac.new(secret, message, "sha256").digest()


def seal(secret: bytes, key: bytes, payload: bytes) -> bytes:
    """A changelog value: format, MAC, payload."""
    return FORMAT + _mac(secret, key, payload) + payload


class _Refused(Exception):
    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def unseal(secrets: Sequence[bytes], key: bytes, value: bytes) -> tuple[bytes, int]:
    """The payload of an authentic value and the index of the secret that sealed it."""
    if value[:1] == PICKLE_FORMAT:
        raise _Refused("pickle",
                       "a pickle (format 1, before rollguard's authenticated state): not read")
    if value[:1] != FORMAT:
        raise _Refused("format", f"unknown format {value[:1]!r}")
    if len(value) < 1 + MAC_BYTES:
        raise _Refused("format", "too short")
    mac, payload = value[1:1 + MAC_BYTES], value[1 + MAC_BYTES:]
    for index, secret in enumerate(secrets):
        if hmac.compare_digest(mac, _mac(secret, key, payload)):
            return payload, index
    raise _Refused("authentication",
                   "authentication failed (not written by this gate, or altered)")


@dataclass(frozen=True)
class Refusal:
    """A changelog record that was not used."""

    offset: int
    key: bytes | None
    reason: str
    kind: str = "format"
    """``pickle``, ``format``, ``authentication`` or ``key`` (the metric's label)."""

    def __str__(self) -> str:
        key = "none" if self.key is None else repr(self.key[:64])[1:]
        return f"state record at offset {self.offset} (key {key}) refused: {self.reason}"


class StateRefused(RuntimeError):
    """The changelog does not hold one consistent, authentic checkpoint: do not lead on it."""


def output_digest(topic: str, key: bytes | None, value: bytes) -> str:
    """What identifies an output record: its topic, key and bytes (the core is deterministic,
    so re-deriving it after a restore gives the same bytes, signatures included).

    >>> output_digest("t", b"k", b"v") == output_digest("t", b"k", b"v") != output_digest(
    ...     "t", None, b"v")
    True
    """
    marked = b"\x00" if key is None else b"\x01" + key
    return hashlib.blake2b(b"%s\x00%s\x00%s" % (topic.encode(), marked, value),
                           digest_size=12).hexdigest()


@dataclass
class StateLog:
    """Writes checkpoints: seals each entry, numbers the checkpoints, repairs refused keys."""

    secret: bytes
    seq: int = 0
    """Number of the last checkpoint written (or restored)."""
    written: dict[str, int] = field(default_factory=dict)
    """Service -> the checkpoint that last wrote its record."""
    rewrite: set[str] = field(default_factory=set)
    """Services to write at the next checkpoint even if untouched (their record was refused
    or sealed with an old secret)."""
    tombstones: set[bytes] = field(default_factory=set)
    """Keys to delete at the next checkpoint (refused records that were never ours)."""

    def entries(
        self, state: EngineState, names: Iterable[str], positions: dict[str, Any],
        rates: dict[str, Any] | None = None,
    ) -> list[tuple[bytes, bytes | None]]:
        """The changelog entries of one checkpoint: the services in ``names`` (those the core
        touched since the last one), the fleet and the positions — with, beside them, the
        OTLP decoder's cumulative-series values at those positions (``rates``)."""
        self.seq = seq = self.seq + 1
        head = b'{"seq":%d,"data":' % seq
        secret = self.secret
        entries: list[tuple[bytes, bytes | None]] = [(key, None) for key in self.tombstones]
        self.tombstones = set()
        services = state.services
        encode = CODEC.encode
        for name in sorted({*names, *self.rewrite}):
            svc = services.get(name)
            if svc is None:
                continue
            key = SERVICE_PREFIX + name.encode()
            payload = head + orjson.dumps(encode(ServiceState, svc)) + b"}"
            entries.append((key, seal(secret, key, payload)))
            self.written[name] = seq
        self.rewrite = set()
        fleet = head + orjson.dumps(encode(FleetState, state.fleet)) + b"}"
        entries.append((FLEET_KEY, seal(secret, FLEET_KEY, fleet)))
        record = {"seq": seq, "data": positions, "services": self.written}
        if rates is not None:
            record["rates"] = rates
        where = orjson.dumps(record)
        entries.append((POSITIONS_KEY, seal(secret, POSITIONS_KEY, where)))
        return entries

    def emitted_entry(self, committed: int, emitted: Emitted) -> tuple[bytes, bytes]:
        """The ``emitted`` record of an output transaction, made while checkpoint
        ``committed`` is the last committed one."""
        payload = orjson.dumps({"seq": committed, "data": emitted})
        return EMITTED_KEY, seal(self.secret, EMITTED_KEY, payload)


@dataclass
class Restored:
    """What a new leader starts from: the engine state and where to resume each input."""

    state: EngineState
    positions: Positions
    log: StateLog
    refused: list[Refusal] = field(default_factory=list)
    """Records that were not used (each already repaired by ``log``'s next checkpoint)."""
    rates: Any = None
    """The OTLP decoder's cumulative-series values at ``positions`` (``SampleBuilder.snapshot``
    after a JSON round trip), if the checkpoint has them."""
    emitted: Emitted = field(default_factory=list)
    """Outputs already published that the inputs after ``positions`` derive again."""


def _payload(raw: bytes, what: str) -> dict[str, Any]:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as err:
        raise StateDecodeError(f"{what}: not JSON ({err})") from None
    if type(data) is not dict or type(data.get("seq")) is not int or "data" not in data:
        raise StateDecodeError(f"{what}: not a state record")
    return data


def restore(
    entries: Iterable[tuple[int, bytes | None, bytes | None]], secrets: Sequence[bytes]
) -> Restored:
    """Rebuild the state from the changelog's (offset, key, value) entries, oldest first.

    ``secrets[0]`` seals new records; the others are only accepted (a key being replaced), and
    what they sealed is written again at the next checkpoint.
    """
    latest: dict[bytes, tuple[int, bytes, int]] = {}  # key -> offset, payload, secret index
    refused_last: dict[bytes, Refusal] = {}  # keys whose latest record was refused
    refused: list[Refusal] = []
    for offset, key, value in entries:
        if key is None:
            refused.append(Refusal(offset, key, "no key", "key"))
            continue
        if value is None:  # a tombstone
            latest.pop(key, None)
            refused_last.pop(key, None)
            continue
        try:
            payload, index = unseal(secrets, key, value)
        except _Refused as err:
            refusal = Refusal(offset, key, str(err), err.kind)
            refused.append(refusal)
            refused_last[key] = refusal
            continue
        latest[key] = (offset, payload, index)
        refused_last.pop(key, None)
    log = StateLog(secret=secrets[0])
    try:
        if latest.keys() <= {EMITTED_KEY}:  # no checkpoint yet: a fresh start
            if refused and not latest:
                raise StateRefused(_nothing_authentic(refused))
            emitted = _emitted(latest[EMITTED_KEY][1] if latest else None, 0)
            return Restored(state=EngineState(), positions=Positions(), log=log,
                            emitted=emitted)
        state, positions, rates, emitted = _rebuild(latest, log)
    except StateDecodeError as err:
        raise StateRefused(
            f"the state changelog is not one consistent checkpoint: {err}. Nothing was "
            "restored; see docs/worker.md, 'State records'") from None
    for key in refused_last:
        if key.startswith(SERVICE_PREFIX) and key in latest:
            log.rewrite.add(key[len(SERVICE_PREFIX):].decode())
        elif key not in latest:
            log.tombstones.add(key)
    for key, (_, _, index) in latest.items():
        if index and key.startswith(SERVICE_PREFIX):
            log.rewrite.add(key[len(SERVICE_PREFIX):].decode())
    return Restored(state=state, positions=positions, log=log, refused=refused, rates=rates,
                    emitted=emitted)


def _rebuild(
    latest: dict[bytes, tuple[int, bytes, int]], log: StateLog
) -> tuple[EngineState, Positions, Any, Emitted]:
    if POSITIONS_KEY not in latest or FLEET_KEY not in latest:
        raise StateDecodeError("no authentic fleet or positions record")
    records = {key: _payload(raw, repr(key)[1:]) for key, (_, raw, _) in latest.items()}
    where = records[POSITIONS_KEY]
    seq = where["seq"]
    written = where.get("services")
    if type(written) is not dict or not all(type(v) is int for v in written.values()):
        raise StateDecodeError("positions: no list of service records")
    fleet = records[FLEET_KEY]
    if fleet["seq"] != seq:
        raise StateDecodeError(f"fleet record of checkpoint {fleet['seq']}, positions of {seq}")
    state = EngineState()
    state.fleet = CODEC.decode(FleetState, fleet["data"])
    for name, at in written.items():
        key = SERVICE_PREFIX + name.encode()
        record = records.get(key)
        if record is None:
            raise StateDecodeError(f"no authentic record of service {name!r}")
        if record["seq"] != at:
            raise StateDecodeError(
                f"service {name!r}: record of checkpoint {record['seq']}, expected {at}")
        svc: ServiceState = CODEC.decode(ServiceState, record["data"])
        if svc.name != name:
            raise StateDecodeError(f"record of service {name!r} holds {svc.name!r}")
        state.services[name] = svc
    newer = [key for key, record in records.items() if record["seq"] > seq]
    if newer:
        raise StateDecodeError(f"records newer than the last checkpoint: {newer[:3]}")
    missing = [name for name in state.fleet.order if name not in state.services]
    if missing:
        raise StateDecodeError(f"no entry for services {missing[:5]}")
    stray = [key for key in latest
             if key.startswith(SERVICE_PREFIX)
             and key[len(SERVICE_PREFIX):].decode(errors="replace") not in written]
    log.tombstones.update(stray)
    log.seq = seq
    log.written = dict(written)
    emitted = _emitted(latest[EMITTED_KEY][1] if EMITTED_KEY in latest else None, seq)
    return state, Positions.from_snapshot(where["data"]), where.get("rates"), emitted


def _emitted(raw: bytes | None, seq: int) -> Emitted:
    """The published outputs that a leader restored at checkpoint ``seq`` (0: none) derives
    again: those published after it was taken (numbered ``seq`` or later). The others are in
    its state."""
    if raw is None:
        return []
    data = _payload(raw, "emitted")["data"]
    if type(data) is not list or not all(
        type(item) is list and len(item) == 2 and type(item[0]) is int and type(item[1]) is str
        for item in data
    ):
        raise StateDecodeError("emitted: not a list of [checkpoint, digest] pairs")
    return [(taken, digest) for taken, digest in data if taken >= seq]


def _nothing_authentic(refused: list[Refusal]) -> str:
    if any("pickle" in r.reason for r in refused):
        return (
            "the state changelog holds state in the retired pickle format (rollguard before "
            "authenticated state), which is never read. Stop every worker and start from a "
            "new ROLLGUARD_APP_ID (inputs are re-read from their retention), or delete the "
            "state topic; see docs/worker.md, 'Migrating from pickled state'")
    return (
        f"the state changelog holds {len(refused)} record(s) and none authenticates: written "
        "by another principal, or with another state secret (ROLLGUARD_STATE_KEY / "
        "ROLLGUARD_SIGNING_KEY). Nothing was restored; see docs/worker.md, 'State records'")
