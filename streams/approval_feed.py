"""Read the worker's approval requests and decisions from Kafka into an ``ApprovalBook``.

Only committed records are read (``read_committed``: the worker publishes in transactions).
``read_book`` reads both topics from the beginning to their end as it was when it began (the
CLI); ``BookFeed`` keeps reading (the console).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import orjson

from rollguard.streams.approval_book import ApprovalBook, ApprovalChange
from rollguard.streams.keyring import Keyring, KeyringFollower
from rollguard.streams.settings import Settings

__all__ = ["BookFeed", "output_consumer", "read_book"]

log = logging.getLogger("rollguard.console")


def output_consumer(settings: Settings, **options: Any) -> Any:
    """A read_committed consumer of the approvals and decisions topics (not yet started)."""
    from aiokafka import AIOKafkaConsumer

    return AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers, enable_auto_commit=False,
        auto_offset_reset="earliest", isolation_level="read_committed",
        **{"group_id": None, **options}, **settings.kafka_client_options())


async def assign_outputs(consumer: Any, settings: Settings) -> list[Any]:
    """Assign every partition of the approvals and decisions topics; return them."""
    from aiokafka import TopicPartition

    # consumer.topics() fetches this very metadata but keeps only the names; aiokafka < 0.15
    # has no public call for a topic's partitions that works before a subscription.
    cluster = await consumer._client.fetch_all_metadata()
    partitions = [TopicPartition(topic, p)
                  for topic in (settings.topic("approvals"), settings.topic("decisions"))
                  for p in sorted(cluster.partitions_for_topic(topic) or ())]
    consumer.assign(partitions)
    return partitions


def fold(book: ApprovalBook, message: Any) -> list[ApprovalChange]:
    """Fold one consumed message; records that are not JSON objects are skipped."""
    try:
        record = orjson.loads(message.value or b"")
    except orjson.JSONDecodeError:
        return []
    if not isinstance(record, dict):
        return []
    return book.add(record, message.timestamp / 1000.0)


async def _at(consumer: Any, ends: dict[Any, int]) -> bool:
    """True when the consumer's position has reached ``ends`` on every partition."""
    for tp, end in ends.items():
        if await consumer.position(tp) < end:
            return False
    return True


async def read_book(settings: Settings, timeout: float = 30.0,
                    keyring: Keyring | None = None) -> ApprovalBook:
    """Both topics, from the beginning to their current end (requests verified with
    ``keyring`` if given)."""
    book = ApprovalBook(keyring=keyring)
    consumer = output_consumer(settings)
    await consumer.start()
    try:
        partitions = await assign_outputs(consumer, settings)
        if not partitions:
            raise LookupError(f"no topic {settings.topic('approvals')} on "
                              f"{settings.bootstrap_servers}; is the worker running?")
        ends = await consumer.end_offsets(partitions)
        deadline = time.monotonic() + timeout
        while not await _at(consumer, ends):
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading the approvals took over {timeout:g} s")
            batches = await consumer.getmany(timeout_ms=500)
            for tp, messages in batches.items():
                for message in messages:
                    if message.offset < ends[tp]:
                        fold(book, message)
    finally:
        await consumer.stop()
    return book


class BookFeed:
    """Keeps ``book`` up to date from the topics until stopped; calls ``on_change`` per change.
    Requests are verified with ``keyring`` (ApprovalBook)."""

    def __init__(self, settings: Settings,
                 on_change: Callable[[ApprovalChange], None] | None = None,
                 keyring: Keyring | KeyringFollower | None = None) -> None:
        self.settings = settings
        self.keys = keyring if not isinstance(keyring, Keyring) else KeyringFollower(
            keyring, None)
        """The gate's keys (None: requests are not verified); a keyring file is re-read
        when it changes (a rotation)."""
        self.book = ApprovalBook(keyring=self.keys.keyring if self.keys else None)
        self.on_change = on_change
        self.ready = asyncio.Event()
        """Set once everything that was on the topics at start has been read."""
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def _run(self) -> None:
        while True:
            try:
                await self._follow()
            except asyncio.CancelledError:
                raise
            except Exception as err:  # noqa: BLE001 - a broker outage must not end the feed
                log.warning("reading the approval topics failed (%s: %s); again in 2 s",
                            type(err).__name__, err)
                # read everything again, from the beginning
                self.book = ApprovalBook(keyring=self.keys.keyring if self.keys else None)
                await asyncio.sleep(2.0)

    async def _follow(self) -> None:
        while True:  # the topics may not exist yet when the console starts
            consumer = output_consumer(self.settings)
            await consumer.start()
            try:
                partitions = await assign_outputs(consumer, self.settings)
                if len({tp.topic for tp in partitions}) < 2:
                    await asyncio.sleep(2.0)
                    continue
                ends = await consumer.end_offsets(partitions)
                while True:
                    if self.keys is not None and self.keys.refresh() is not None:
                        self.book.keyring = self.keys.keyring
                    batches = await consumer.getmany(timeout_ms=500)
                    for messages in batches.values():
                        for message in messages:
                            for change in fold(self.book, message):
                                if self.on_change is not None:
                                    self.on_change(change)
                    if not self.ready.is_set() and await _at(consumer, ends):
                        self.ready.set()
            finally:
                await consumer.stop()
