"""Two engines, each over half the input partitions, exchange fleet reports on a real topic
(transactional producers, read_committed consumers) and decide exactly as replay does.

The budget storm (tests/scenarios/budget_storm.py): claims of two workers meet at one window
end while the hourly budget runs out, an approved rollback spends it, a fleet-wide anomaly.
What is on Kafka here is the fleet exchange only (``streams.fleet_topic``); the inputs are fed
to the engines in process, in bursts, so that one worker runs ahead of the other.
"""

from __future__ import annotations

import asyncio
import random

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from rollguard.models.engine import last_bake_end
from rollguard.models.events import CoreOutput
from rollguard.streams.fleet_topic import PartitionBarrier, decode_report, encode_report
from rollguard.streams.pipeline import Pipeline
from tests.golden.edges import APPROVERS
from tests.golden.test_golden import policy
from tests.scenarios.budget_storm import budget_storm
from tests.scenarios.partitioned import (
    by_service,
    decode_records,
    partition_of,
    replay_outputs,
    request_services,
)

pytestmark = [pytest.mark.broker, pytest.mark.timeout(300)]

PARTITIONS = 6
SECRET = b"fleet-topic-test"


async def test_two_workers_exchange_fleet_reports_on_kafka(
    kafka_bootstrap: str, run_id: str
) -> None:
    lines = budget_storm()
    rules = policy()
    expected = replay_outputs(lines, rules, APPROVERS)
    requests = request_services(expected)
    topic = f"{run_id}fleet"
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 1, 1)])
    finally:
        await admin.close()

    # Replay's decoding, records routed by their key's partition.
    decoded, newest = decode_records(lines, rules)
    assert newest is not None
    workers = []
    for w in range(2):
        owned = {p for p in range(PARTITIONS) if p % 2 == w}
        barrier = PartitionBarrier(
            f"w{w}", owned, PARTITIONS, lambda s: partition_of(s.encode(), PARTITIONS)
        )
        pipeline = Pipeline(rules, approvers=APPROVERS)
        pipeline.state.exchange = barrier
        records = []
        for record, raw in decoded:
            service = record.service or requests.get(getattr(record, "request_id", ""), "")
            if partition_of(service.encode(), PARTITIONS) % 2 == w:
                records.append((record, raw))
        producer = AIOKafkaProducer(
            bootstrap_servers=kafka_bootstrap, transactional_id=f"{run_id}engine-w{w}"
        )
        consumer = AIOKafkaConsumer(
            topic, bootstrap_servers=kafka_bootstrap, isolation_level="read_committed",
            auto_offset_reset="earliest", enable_auto_commit=False,
        )
        await producer.start()
        await consumer.start()
        workers.append(_Worker(barrier, pipeline, records, producer, consumer))
    try:
        rng = random.Random(4)
        lateness = rules.defaults.allowed_lateness_seconds
        await _run(workers, rng, lambda w: w.feed(rng, newest - lateness))
        target = max([newest] + [last_bake_end(w.pipeline.state, rules) for w in workers])
        for w in workers:
            w.out.extend(w.pipeline.advance(target))
        await _run(workers, rng, lambda w: w.feed(rng, None))
    finally:
        for w in workers:
            await w.producer.stop()
            await w.consumer.stop()
    got = [o for w in workers for o in w.out]
    want_by, got_by = by_service(expected), by_service(got)
    for service in sorted(set(want_by) | set(got_by)):
        assert got_by.get(service, []) == want_by.get(service, []), service
    assert len(got) == len(expected)
    assert sum(len(w.sent) for w in workers) > 10  # the reports went through the topic
    assert sum(w.holds for w in workers) > 0  # and a worker did wait for the other


class _Worker:
    def __init__(
        self,
        barrier: PartitionBarrier,
        pipeline: Pipeline,
        records: list,  # type: ignore[type-arg]
        producer: AIOKafkaProducer,
        consumer: AIOKafkaConsumer,
    ) -> None:
        self.barrier, self.pipeline, self.records = barrier, pipeline, records
        self.producer, self.consumer = producer, consumer
        self.read = 0
        self.caught_up = False
        self.out: list[CoreOutput] = []
        self.sent: list[bytes] = []
        self.holds = 0

    def feed(self, rng: random.Random, newest: float | None) -> bool:
        """Some work in process; False if there was none to do."""
        pipe = self.pipeline
        if pipe.held:
            self.out.extend(pipe.resume())
            return not pipe.held
        if self.read < len(self.records):
            for record, raw in self.records[self.read:self.read + rng.randint(1, 3000)]:
                self.read += 1
                self.out.extend(pipe.process(record, raw))
                if pipe.held:
                    self.holds += 1
                    break
            return True
        if newest is not None and not self.caught_up:
            self.caught_up = True
            self.out.extend(pipe.advance(newest))
            return True
        return False

    async def exchange(self) -> None:
        """Send the queued reports in one transaction; deliver what the topic holds."""
        if self.barrier.outgoing:
            async with self.producer.transaction():
                for report in self.barrier.outgoing:
                    key, value = encode_report(SECRET, report)
                    await self.producer.send(self.consumer_topic, value, key=key)
                    self.sent.append(value)
            self.barrier.outgoing.clear()
        batches = await self.consumer.getmany(timeout_ms=50)
        for messages in batches.values():
            for m in messages:
                assert m.key is not None and m.value is not None
                self.barrier.deliver(decode_report([SECRET], m.key, m.value))

    @property
    def consumer_topic(self) -> str:
        return next(iter(self.consumer.subscription()))


async def _run(workers: list[_Worker], rng: random.Random, step: object) -> None:
    assert callable(step)
    idle_rounds = 0
    while idle_rounds < 20:
        order = list(workers)
        rng.shuffle(order)
        progressed = False
        for w in order:
            progressed = step(w) or progressed
            await w.exchange()
        idle_rounds = 0 if progressed else idle_rounds + 1
        if not progressed and not any(w.pipeline.held for w in workers):
            break
        await asyncio.sleep(0)
    assert not any(w.pipeline.held for w in workers), "a worker waits at the barrier forever"
