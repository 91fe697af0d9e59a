"""Smoke test of the real local Kafka broker (scripts/kafka.sh) with aiokafka and faust.

Start the broker first: ``scripts/kafka.sh start``. Without a reachable broker these tests skip,
unless ``ROLLGUARD_REQUIRE_BROKER=1`` (CI), where they fail.

Every topic and consumer group is uniquely named (uuid), so the tests can run against a
long-lived broker and repeatedly; the topics they create are deleted afterwards.

faust runs in-process: ``await app.start()`` returns once the app has joined its consumer
group, got its assignment and recovered its tables; ``await app.stop()`` shuts it down.
See docs/kafka.md for what was learnt about running faust in tests.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

pytestmark = pytest.mark.broker

TIMEOUT = 60.0  # seconds, for any single wait on the broker


# --- fixtures -----------------------------------------------------------------------------------


@pytest.fixture
def bootstrap(kafka_bootstrap: str) -> str:
    """The broker of tests/conftest.py (mandatory under ROLLGUARD_REQUIRE_BROKER=1)."""
    return kafka_bootstrap


@pytest.fixture
def suffix() -> str:
    return uuid.uuid4().hex[:12]


@pytest.fixture
async def admin(bootstrap: str, suffix: str) -> AsyncIterator[AIOKafkaAdminClient]:
    """An admin client; at teardown, deletes every topic whose name contains ``suffix``."""
    client = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=30000)
    await client.start()
    try:
        yield client
    finally:
        leftovers = [t for t in await client.list_topics() if suffix in t]
        if leftovers:
            await client.delete_topics(leftovers)
        await client.close()


async def partition_count(admin: AIOKafkaAdminClient, topic: str) -> int:
    (description,) = await admin.describe_topics([topic])
    assert description["error_code"] == 0, description
    return len(description["partitions"])


async def end_offsets_total(bootstrap: str, topic: str, partitions: int) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        return sum((await consumer.end_offsets(tps)).values())
    finally:
        await consumer.stop()


# --- tests --------------------------------------------------------------------------------------


async def test_admin_creates_topic(admin: AIOKafkaAdminClient, suffix: str) -> None:
    topic = f"rg-smoke-admin-{suffix}"
    await admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])
    assert topic in await admin.list_topics()
    assert await partition_count(admin, topic) == 3


async def test_produce_and_consume(bootstrap: str, admin: AIOKafkaAdminClient, suffix: str) -> None:
    topic = f"rg-smoke-pc-{suffix}"
    await admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])
    sent = {f"key-{i}".encode(): f"value-{i}".encode() for i in range(10)}

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for key, value in sent.items():
            await producer.send_and_wait(topic, value=value, key=key)
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"rg-smoke-pc-{suffix}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    received: dict[bytes, bytes] = {}
    try:
        async with asyncio.timeout(TIMEOUT):
            while len(received) < len(sent):
                batches = await consumer.getmany(timeout_ms=1000)
                for records in batches.values():
                    received.update((r.key, r.value) for r in records)
        await consumer.commit()  # exercises the group coordinator / __consumer_offsets
    finally:
        await consumer.stop()
    assert received == sent


async def test_faust_agent_and_table(
    bootstrap: str, admin: AIOKafkaAdminClient, suffix: str
) -> None:
    import faust  # imported here: only this test needs it

    partitions = 2
    app_id = f"rg-smoke-{suffix}"
    source = f"rg-smoke-src-{suffix}"
    # faust declares its internal topics (changelog, leader) but never source topics, and the
    # broker does not auto-create topics. The source must have as many partitions as the
    # table's changelog (topic_partitions), or the agent crashes with PartitionsMismatch.
    await admin.create_topics([NewTopic(source, partitions, 1)])

    app = faust.App(
        app_id,
        broker=f"kafka://{bootstrap}",
        store="memory://",
        topic_partitions=partitions,
        topic_replication_factor=1,
        web_enabled=False,
    )
    topic = app.topic(source, key_type=str, value_type=str)
    counts = app.Table("counts", default=int)

    records = [(f"k{i % 3}", f"v{i}") for i in range(6)]
    seen: list[tuple[str, str]] = []
    all_seen = asyncio.Event()
    # faust catches agent exceptions (logs them, restarts the actor): surface them here.
    failure: asyncio.Future[BaseException] = asyncio.get_running_loop().create_future()

    @app.agent(topic)
    async def count(stream):  # type: ignore[no-untyped-def]
        try:
            async for key, value in stream.items():
                seen.append((key, value))
                counts[key] += 1
                if len(seen) >= len(records):
                    all_seen.set()
        except Exception as exc:
            if not failure.done():
                failure.set_result(exc)
            raise

    await asyncio.wait_for(app.start(), TIMEOUT)
    try:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
        await producer.start()
        try:
            for key, value in records:
                # faust's default value serializer is json; keys are raw bytes -> str
                await producer.send_and_wait(source, key=key.encode(), value=f'"{value}"'.encode())
        finally:
            await producer.stop()

        seen_task = asyncio.ensure_future(all_seen.wait())
        done, _ = await asyncio.wait(
            {seen_task, failure}, timeout=TIMEOUT, return_when=asyncio.FIRST_COMPLETED
        )
        seen_task.cancel()
        if failure.done():
            raise AssertionError(f"faust agent crashed: {failure.result()!r}")
        assert done, f"faust agent saw only {seen!r} within {TIMEOUT}s"
        assert sorted(seen) == sorted(records)
        assert dict(counts.items()) == {"k0": 2, "k1": 2, "k2": 2}
    finally:
        await asyncio.wait_for(app.stop(), TIMEOUT)

    changelog = f"{app_id}-counts-changelog"
    assert changelog in await admin.list_topics()
    assert await partition_count(admin, changelog) == partitions
    # Every table write was sent to the changelog (one record per update).
    assert await end_offsets_total(bootstrap, changelog, partitions) == len(records)
