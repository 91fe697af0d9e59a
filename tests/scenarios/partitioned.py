"""N engines over the partitions of one replay file, exchanging fleet facts in process.

The file is decoded exactly as ``rollguard replay`` decodes it; each valid record goes to the
partition its Kafka key (the service) hashes to with the producer's default partitioner
(murmur2), and partition ``i`` to worker ``i % N`` (co-partitioned, as on Kafka). The workers
run in an order chosen by a seeded random schedule that feeds one of them a burst of its
records at a time, so one may run far ahead of another; a worker waiting at the fleet barrier
is fed nothing until it can go on. When a worker has read everything it lets event time run
to the newest event time of the file (what an idle input does on Kafka), and at the end every
worker lets it run out every bake, as replay does.
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass, field

from aiokafka.partitioner import murmur2

from rollguard.models.engine import last_bake_end
from rollguard.models.events import ApprovalRequest, ApprovalResponse, CoreOutput
from rollguard.models.fleet import FleetBoard
from rollguard.models.policy import Policy
from rollguard.streams.approvers import ApproverDirectory
from rollguard.streams.fleet_topic import PartitionBarrier, decode_report, encode_report
from rollguard.streams.pipeline import Pipeline
from rollguard.streams.replay import replay_lines
from rollguard.streams.serde import InputRecord, encode

SECRET = b"fleet-test-secret"


def partition_of(key: bytes, partitions: int) -> int:
    """The partition the Kafka producer's default partitioner picks for ``key``."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


class _Recorder(Pipeline):
    """Replay's decoding, recording the valid records instead of deciding."""

    def __init__(self, policy: Policy) -> None:
        super().__init__(policy)
        self.records: list[tuple[InputRecord, bytes]] = []
        self.newest: float | None = None

    def process(self, record: InputRecord, raw: bytes = b"") -> list[CoreOutput]:
        self.records.append((record, raw))
        return []

    def finish(self, newest: float) -> list[CoreOutput]:
        self.newest = newest
        return []


@dataclass
class Worker:
    """One simulated worker: its pipeline, its records, what it emitted."""

    name: str
    pipeline: Pipeline
    records: list[tuple[InputRecord, bytes]] = field(default_factory=list)
    read: int = 0
    out: list[CoreOutput] = field(default_factory=list)
    caught_up: bool = False

    def emit(self, outputs: list[CoreOutput]) -> None:
        self.out.extend(outputs)


def decode_records(
    lines: list[bytes], policy: Policy
) -> tuple[list[tuple[InputRecord, bytes]], float | None]:
    """The valid records of ``lines`` as replay decodes them, and the newest event time."""
    recorder = _Recorder(policy)
    for _ in replay_lines(lines, policy, pipeline=recorder):
        pass
    return recorder.records, recorder.newest


def replay_outputs(
    lines: list[bytes], policy: Policy, approvers: ApproverDirectory | None = None
) -> list[CoreOutput]:
    """What ``rollguard replay`` emits for these lines, dead letters left out."""
    return [
        o for o in replay_lines(lines, policy, approvers=approvers) if o.type != "dead_letter"
    ]


def run_partitioned(
    lines: list[bytes],
    policy: Policy,
    *,
    workers: int,
    partitions: int = 6,
    schedule_seed: int = 0,
    max_burst: int = 400,
    approvers: ApproverDirectory | None = None,
    requests: dict[str, str] | None = None,
    wire: bool = False,
) -> list[list[CoreOutput]]:
    """Each worker's outputs (dead letters left out).

    ``requests``: approval request id -> service, to key approval responses that do not name
    their service (``rollguard approve`` looks the request up and keys by its service).
    ``wire``: the workers exchange sealed fleet records through one log, as on the fleet
    topic (``streams.fleet_topic.PartitionBarrier``), every record written twice (a restarted
    owner sends its reports again); otherwise through a ``FleetBoard``.
    """
    records, newest = decode_records(lines, policy)
    board = FleetBoard(str(w) for w in range(workers))
    log: list[tuple[bytes, bytes]] = []
    barriers: list[PartitionBarrier] = []
    crew = []
    for w in range(workers):
        pipeline = Pipeline(policy, approvers=approvers)
        if wire:
            owned = {p for p in range(partitions) if p % workers == w}
            barrier = PartitionBarrier(
                str(w), owned, partitions, lambda s: partition_of(s.encode(), partitions)
            )
            barriers.append(barrier)
            pipeline.state.exchange = barrier
        else:
            pipeline.state.exchange = board.seat(str(w))
        crew.append(Worker(str(w), pipeline))
    read = [0] * workers

    def carry() -> None:
        """Send every queued report (twice) and deliver the log to every barrier."""
        for barrier in barriers:
            for report in barrier.outgoing:
                log.extend([encode_report(SECRET, report)] * 2)
            barrier.outgoing.clear()
        for w, barrier in enumerate(barriers):
            for key, value in log[read[w]:]:
                barrier.deliver(decode_report([SECRET], key, value))
            read[w] = len(log)
    for record, raw in records:
        service = record.service
        if service is None and isinstance(record, ApprovalResponse) and requests:
            service = requests.get(record.request_id)
        p = partition_of((service or "").encode(), partitions)
        crew[p % workers].records.append((record, raw))
    if newest is None:
        return [[] for _ in crew]
    lateness = policy.defaults.allowed_lateness_seconds
    rng = random.Random(schedule_seed)

    def progress(worker: Worker) -> bool:
        """Let ``worker`` do some work; False if it could do none."""
        carry()
        pipe = worker.pipeline
        if pipe.held:
            worker.emit(pipe.resume())
            return not pipe.held
        if worker.read < len(worker.records):
            burst = rng.randint(1, max_burst)
            for record, raw in worker.records[worker.read:worker.read + burst]:
                worker.read += 1
                worker.emit(pipe.process(record, raw))
                if pipe.held:
                    break
            return True
        if not worker.caught_up:
            worker.caught_up = True
            worker.emit(pipe.advance(newest - lateness))
            return True
        return False

    _run(crew, rng, progress)
    target = max([newest] + [last_bake_end(w.pipeline.state, policy) for w in crew])
    for worker in crew:
        carry()
        worker.emit(worker.pipeline.advance(target))
    _run(crew, rng, progress)
    return [w.out for w in crew]


def _run(crew: list[Worker], rng: random.Random, progress: object) -> None:
    assert callable(progress)
    while True:
        order = list(crew)
        rng.shuffle(order)
        if not any(progress(w) for w in order):
            break
    stuck = [w.name for w in crew if w.pipeline.held]
    assert not stuck, f"workers {stuck} wait at the fleet barrier forever"


def request_services(outputs: list[CoreOutput]) -> dict[str, str]:
    """Approval request id -> service, from replay's outputs."""
    return {o.request_id: o.service for o in outputs if isinstance(o, ApprovalRequest)}


def by_service(outputs: list[CoreOutput]) -> dict[str, list[bytes]]:
    """Each service's output records, encoded, in the order emitted."""
    grouped: defaultdict[str, list[bytes]] = defaultdict(list)
    for o in outputs:
        grouped[str(getattr(o, "service", None))].append(encode(o))
    return dict(grouped)
