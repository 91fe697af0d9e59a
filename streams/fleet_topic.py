"""The fleet exchange on Kafka: fleet reports on ``{app_id}-fleet``, a barrier over partitions.

Workers that each own some input partitions (partition ``i`` of every input topic to one
worker) publish their ``FleetReport`` s to one topic and read everyone's. ``PartitionBarrier``
is the engine's ``FleetExchange`` (synchronous, no I/O): ``publish`` queues a report for the
shell to send, ``collect(t)`` answers from what the shell has delivered. The barrier is over
input partitions, not workers: it holds until, for every input partition this worker does not
own, a report covering it says ``through >= t`` — so a rebalance (another owner, another
member id) changes nothing. Each fact on the wire names its service's partition; a reader
drops a fact at or before what it has already seen through for that partition, so a report a
restarted owner sends again adds nothing.

A record: key = the member id; value = ``seal(state secret, key, JSON)`` (the same HMAC as the
state changelog: only the gate may write what its decisions rely on) with the JSON
``{"v": 1, "partitions": [0, 2], "through": t, "facts": [[t, phase, service, start,
[b, b, b, b], partition], ...]}``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from rollguard.models.fleet import FleetFact, FleetReport, Phase
from rollguard.streams.checkpoint import seal, unseal

__all__ = [
    "PartitionBarrier",
    "WireReport",
    "barrier_snapshot",
    "decode_report",
    "encode_report",
    "restore_barrier",
]

VERSION = 1


@dataclass(frozen=True, slots=True)
class WireReport:
    """A report as it travels: who sent it, which input partitions it speaks for."""

    member: str
    partitions: tuple[int, ...]
    report: FleetReport
    fact_partitions: tuple[int, ...]
    """The input partition of each fact's service, in ``report.facts`` order."""


def encode_report(secret: bytes, wire: WireReport) -> tuple[bytes, bytes]:
    """Key and sealed value of a fleet record."""
    facts = [
        [f.t, int(f.phase), f.service, f.start, list(f.rolls_back), p]
        for f, p in zip(wire.report.facts, wire.fact_partitions, strict=True)
    ]
    payload = orjson.dumps(
        {"v": VERSION, "partitions": list(wire.partitions), "through": wire.report.through,
         "facts": facts}
    )
    key = wire.member.encode()
    return key, seal(secret, key, payload)


def decode_report(secrets: Iterable[bytes], key: bytes, value: bytes) -> WireReport:
    """The report of an authentic fleet record; ValueError for anything else."""
    try:
        payload, _ = unseal(list(secrets), key, value)
    except Exception as exc:  # checkpoint._Refused: not sealed by this gate
        raise ValueError(f"fleet record refused: {exc}") from None
    data = orjson.loads(payload)
    if not isinstance(data, dict) or data.get("v") != VERSION:
        raise ValueError("fleet record of an unknown version")
    facts: list[FleetFact] = []
    partitions: list[int] = []
    for t, phase, service, start, cases, partition in data["facts"]:
        rolls = tuple(bool(c) for c in cases)
        if len(rolls) != 4:
            raise ValueError("a claim has four cases")
        facts.append(FleetFact(float(t), Phase(phase), str(service), float(start),
                               (rolls[0], rolls[1], rolls[2], rolls[3])))
        partitions.append(int(partition))
    return WireReport(
        key.decode(),
        tuple(int(p) for p in data["partitions"]),
        FleetReport(float(data["through"]), tuple(facts)),
        tuple(partitions),
    )


@dataclass
class PartitionBarrier:
    """The ``FleetExchange`` of a worker that owns ``owned`` of ``partitions`` input partitions.

    >>> barrier = PartitionBarrier("a", {0}, 2, partition_of=lambda s: 0 if s == "x" else 1)
    >>> barrier.collect(30.0) is None
    True
    >>> other = FleetReport(60.0, (FleetFact(60.0, Phase.CLOSE, "y", 30.0),))
    >>> barrier.deliver(WireReport("b", (1,), other, (1,)))
    >>> [f.service for r in barrier.collect(30.0) for f in r.facts]
    ['y']
    """

    member: str
    owned: set[int]
    partitions: int
    partition_of: Callable[[str], int]
    outgoing: list[WireReport] = field(default_factory=list)
    through: dict[int, float] = field(default_factory=dict)
    """Input partition -> the highest ``through`` a report covering it has said."""
    inbox: list[FleetReport] = field(default_factory=list)

    def publish(self, report: FleetReport) -> None:
        """Queue this worker's report; the shell sends ``outgoing`` before it waits."""
        parts = tuple(self.partition_of(f.service) for f in report.facts)
        self.outgoing.append(WireReport(self.member, tuple(sorted(self.owned)), report, parts))

    def collect(self, through: float) -> list[FleetReport] | None:
        """The others' new facts once every partition not owned here is through ``through``."""
        for p in range(self.partitions):
            if p not in self.owned and self.through.get(p, float("-inf")) < through:
                return None
        new, self.inbox = self.inbox, []
        return new

    def deliver(self, wire: WireReport) -> None:
        """A report read from the fleet topic (this worker's own are skipped)."""
        if wire.member == self.member:
            return
        facts = tuple(
            f
            for f, p in zip(wire.report.facts, wire.fact_partitions, strict=True)
            if p not in self.owned and (f.t, f.phase) > (self._seen(p), Phase.JUDGE)
        )
        for p in wire.partitions:
            if wire.report.through > self._seen(p):
                self.through[p] = wire.report.through
        if facts:
            self.inbox.append(FleetReport(wire.report.through, facts))

    def _seen(self, partition: int) -> float:
        return self.through.get(partition, float("-inf"))


def _fact(f: FleetFact) -> list[Any]:
    return [f.t, int(f.phase), f.service, f.start, list(f.rolls_back)]


def _unfact(item: list[Any]) -> FleetFact:
    t, phase, service, start, cases = item
    rolls = tuple(bool(c) for c in cases)
    return FleetFact(float(t), Phase(phase), str(service), float(start),
                     (rolls[0], rolls[1], rolls[2], rolls[3]))


def barrier_snapshot(barrier: PartitionBarrier, offset: int) -> dict[str, Any]:
    """What a checkpoint keeps of ``barrier`` (with the fleet topic's next offset to read), so
    that a restore neither loses nor double-counts a fact when it reads the topic again.
    Its ``outgoing`` must be empty (sent) when the checkpoint is taken."""
    return {
        "offset": offset,
        "partitions": barrier.partitions,
        "through": [[p, t] for p, t in sorted(barrier.through.items())],
        "inbox": [[r.through, [_fact(f) for f in r.facts]] for r in barrier.inbox],
    }


def restore_barrier(barrier: PartitionBarrier, data: dict[str, Any] | None) -> int | None:
    """Put a checkpoint's barrier state back; the fleet topic offset to resume at (None: from
    the beginning)."""
    if not data:
        return None
    made = data.get("partitions", barrier.partitions)
    if made != barrier.partitions:
        raise ValueError(
            f"the input topics have {barrier.partitions} partitions, but this slot's state was "
            f"made with {made}: services hash to other partitions now, so their state would be "
            "in another slot. Restore the partition count, or start from a new ROLLGUARD_APP_ID"
        )
    barrier.through = {int(p): float(t) for p, t in data["through"]}
    barrier.inbox = [
        FleetReport(float(through), tuple(_unfact(f) for f in facts))
        for through, facts in data["inbox"]
    ]
    return int(data["offset"])
