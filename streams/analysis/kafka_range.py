"""A time range of rollguard's input topics, read from Kafka and merged into event-time order.

The range is selected with the **Kafka record timestamp** (``CreateTime`` as the producer set
it, or ``LogAppendTime`` if the topic is configured so), not the event's ``ts``: that is what
the broker indexes. For each partition the first offset comes from the broker's
offsets-for-times lookup (``since``), and reading stops before the first record whose
timestamp is after ``until`` (the lookup for ``until + 1 ms`` gives that offset up front; a
record read past it with a later timestamp also stops the partition), or at the partition's
end as it was when the read began. Nothing before ``since`` is read.

Partitions are then merged by the **event time** of their records (``ts``), with ties broken by
(topic, partition, offset): a k-way merge that keeps each partition's own order, so the merged
sequence depends only on what the partitions hold, never on fetch timing. Every record is
decoded with ``streams.serde.decode`` exactly as the worker does (key = service, one record type
per topic, size limit); what fails becomes a ``DeadLetter`` placed at its Kafka timestamp. The
clock-skew check is left to replay, which applies it to the merged lines as it does to a file.

Approval responses are the exception (DESIGN §6): they are merged by their arrival time (the
broker's LogAppendTime), which is added to the line as ``received_at``, as the worker hands it
to the core; one on a CreateTime topic becomes a dead letter, as in the worker.

Valid records are yielded as the producer's own bytes (one line; compacted only if the JSON
spans several lines): approval signatures are checked on those bytes, and re-encoding through
the model would drop unknown fields and change how ``ts`` is written.

Foreign records are decoded as the worker decodes them (``streams.ingest.inputs``): a CDEvent
on ``deploys`` becomes its ``DeployEvent`` line; an OTLP message on ``otlp_metrics`` is merged
as one item at its earliest point's time and becomes, there, the ``MetricSample`` lines of one
``SampleBuilder`` fed in the merged order — the samples the worker's core receives.
"""

from __future__ import annotations

import asyncio
import base64
import heapq
import math
import time
from collections import Counter, deque
from collections.abc import AsyncGenerator, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import orjson

from rollguard.models.events import DeadLetter
from rollguard.streams.analysis.progress import ProgressReporter
from rollguard.streams.arrival import CREATE_TIME_ERROR, arrival_of, with_arrival
from rollguard.streams.ingest.inputs import OTLP_TYPE, FanOut, decode_foreign, is_foreign
from rollguard.streams.ingest.rates import SampleBuilder
from rollguard.streams.serde import decode, encode
from rollguard.streams.settings import Settings

__all__ = ["RangeError", "RangeStats", "TimeRange", "input_topics", "read_range"]

_Payload: TypeAlias = bytes | DeadLetter | FanOut  # noqa: UP040 - mypy reads it as an alias
_BATCH = 1000
_FETCH_MAX = 2000
_STALL_SECONDS = 30.0


class RangeError(Exception):
    """The range cannot be read (a missing topic, an unreachable broker, a stalled partition)."""


@dataclass(frozen=True, slots=True)
class TimeRange:
    """``[since, until]`` in epoch seconds; ``None`` leaves that side open."""

    since: float | None = None
    until: float | None = None

    def __post_init__(self) -> None:
        if self.since is not None and self.until is not None and self.until < self.since:
            raise ValueError("--until is before --since")

    @property
    def since_ms(self) -> int | None:
        return None if self.since is None else math.ceil(self.since * 1000)

    @property
    def until_ms(self) -> int | None:
        return None if self.until is None else math.floor(self.until * 1000)


@dataclass
class RangeStats:
    """What a range read found: partitions, records per topic, dead letters."""

    partitions: int = 0
    planned: int = 0
    records: Counter[str] = field(default_factory=Counter)
    dead_letters: int = 0
    first_error: str | None = None


def input_topics(settings: Settings, names: Sequence[str] = ()) -> dict[str, str]:
    """Full input topic names (prefix included) → the record type each carries.

    ``names`` may give the configured names (``telemetry.metrics``), the setting names
    (``metrics``) or full names; empty means every input topic (DESIGN §2).
    """
    by_name = {**settings.topics.inputs(), settings.topics.otlp_metrics: OTLP_TYPE}
    fields = {"deploys", "metrics", "alerts", "approval_responses", "otlp_metrics"}
    prefix = settings.topic_prefix
    wanted: dict[str, str] = {}
    for raw in names or list(by_name):
        name = raw.strip()
        if name in fields:
            name = str(getattr(settings.topics, name))
        elif name.startswith(prefix) and name[len(prefix):] in by_name:
            name = name[len(prefix):]
        if name not in by_name:
            known = ", ".join(by_name)
            raise ValueError(f"{raw!r} is not an input topic (one of: {known})")
        wanted[settings.topic_prefix + name] = by_name[name]
    # Keep the order of DESIGN §2 whatever order they were given in: it breaks ties.
    order = [settings.topic_prefix + n for n in by_name]
    return {t: wanted[t] for t in order if t in wanted}


@dataclass(slots=True)
class _Plan:
    tp: Any
    rank: int
    start: int
    stop: int


class _PartitionReader:
    """One partition from ``start`` up to ``stop`` (or a record after ``until``), in order."""

    def __init__(self, consumer: Any, plan: _Plan, expected_type: str, until_ms: int | None,
                 settings: Settings, stats: RangeStats,
                 progress: ProgressReporter | None) -> None:
        self.consumer = consumer
        self.plan = plan
        self.expected_type = expected_type
        self.until_ms = until_ms
        self.settings = settings
        self.stats = stats
        self.progress = progress
        self.buffer: deque[tuple[tuple[float, int, int, int], _Payload]] = deque()
        self.done = plan.start >= plan.stop
        self._quiet_since: float | None = None

    async def next(self) -> tuple[tuple[float, int, int, int], _Payload] | None:
        while not self.buffer:
            if self.done:
                return None
            await self._fetch()
        return self.buffer.popleft()

    def _finish(self) -> None:
        self.done = True
        self.consumer.pause(self.plan.tp)

    async def _fetch(self) -> None:
        tp = self.plan.tp
        batch = await self.consumer.getmany(tp, timeout_ms=500, max_records=_FETCH_MAX)
        records = batch.get(tp, [])
        if not records:
            if await self.consumer.position(tp) >= self.plan.stop:
                self._finish()  # only markers (transactions) or compacted gaps were left
                return
            now = time.monotonic()
            self._quiet_since = self._quiet_since or now
            if now - self._quiet_since > _STALL_SECONDS:
                raise RangeError(f"{tp.topic}[{tp.partition}]: no records for "
                                 f"{_STALL_SECONDS:.0f} s before offset {self.plan.stop}")
            return
        self._quiet_since = None
        for record in records:
            if record.offset >= self.plan.stop or (
                self.until_ms is not None and record.timestamp > self.until_ms
            ):
                self._finish()
                return
            item = self._item(record)
            if item is not None:
                self.buffer.append(item)
            if self.progress is not None:
                self.progress.advance()
            if record.offset + 1 >= self.plan.stop:
                self._finish()
                return

    def _item(self, record: Any) -> tuple[tuple[float, int, int, int], _Payload] | None:
        foreign = is_foreign(self.expected_type, record.headers)
        decoded: Any
        if foreign:
            decoded = decode_foreign(
                record.value, key=record.key, headers=record.headers, topic=record.topic,
                partition=record.partition, offset=record.offset, expected=self.expected_type,
                otlp=self.settings.ingest.otlp, reference_time=math.inf,  # skew: see above
                max_clock_skew_seconds=0.0, max_message_bytes=self.settings.max_message_bytes)
        else:
            decoded = decode(
                record.value,
                key=record.key,
                topic=record.topic,
                partition=record.partition,
                offset=record.offset,
                expected_type=self.expected_type,
                max_message_bytes=self.settings.max_message_bytes,
            )
        self.stats.records[record.topic] += 1
        position = (self.plan.rank, record.partition, record.offset)
        if decoded.dead_letter is not None:
            self.stats.dead_letters += 1
            self.stats.first_error = self.stats.first_error or decoded.dead_letter.error
            kafka_ts = record.timestamp / 1000.0
            letter = decoded.dead_letter.model_copy(update={"ts": kafka_ts})
            return (kafka_ts, *position), letter
        if decoded.record is None:  # an OTLP message with nothing mapped
            return None
        if isinstance(decoded.record, FanOut):
            return (decoded.record.ts, *position), decoded.record
        if foreign:  # a CDEvent: the record it is, as a native line
            return (decoded.record.ts, *position), encode(decoded.record)
        value: bytes = record.value
        event_time = decoded.record.ts
        if self.expected_type == "approval_response":
            # Timed and ordered by its arrival, as the worker does (streams/arrival.py).
            received_at = arrival_of(record.timestamp, record.timestamp_type)
            if received_at is None:
                self.stats.dead_letters += 1
                self.stats.first_error = self.stats.first_error or CREATE_TIME_ERROR
                return (record.timestamp / 1000.0, *position), _letter(record, CREATE_TIME_ERROR)
            return (received_at, *position), with_arrival(value, received_at)
        if b"\n" in value or b"\r" in value:
            value = orjson.dumps(orjson.loads(value))  # one line; same fields, same order
        return (event_time, *position), value


def _letter(record: Any, error: str) -> DeadLetter:
    return DeadLetter(
        topic=record.topic, partition=record.partition, offset=record.offset,
        key_b64=None if record.key is None else base64.b64encode(record.key).decode(),
        value_b64=base64.b64encode(record.value).decode(), error=error,
        ts=record.timestamp / 1000.0,
    )


class _RangeReader:
    """The async side: plan the partitions, then merge them in event-time order."""

    def __init__(self, settings: Settings, time_range: TimeRange, topics: dict[str, str],
                 stats: RangeStats, progress: ProgressReporter | None) -> None:
        self.settings = settings
        self.range = time_range
        self.topics = topics
        self.stats = stats
        self.progress = progress
        self.consumer: Any = None
        self.partitions: dict[str, list[int]] = {}

    async def start(self) -> list[_Plan]:
        from aiokafka import AIOKafkaConsumer

        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.bootstrap_servers,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            fetch_max_bytes=max(52428800, self.settings.max_message_bytes * 4),
            max_partition_fetch_bytes=max(1048576, self.settings.max_message_bytes * 4),
            **self.settings.kafka_client_options(),
        )
        try:
            await self.consumer.start()
        except Exception as err:  # noqa: BLE001 - one readable line for the CLI
            raise RangeError(f"cannot reach Kafka at {self.settings.bootstrap_servers}: "
                             f"{err}") from None
        self.partitions = await self._partitions()
        return await self._plan()

    async def _partitions(self) -> dict[str, list[int]]:
        """Partition ids of each wanted topic; RangeError naming a topic that does not exist."""
        from aiokafka.admin import AIOKafkaAdminClient

        admin = AIOKafkaAdminClient(bootstrap_servers=self.settings.bootstrap_servers,
                                    **self.settings.kafka_client_options())
        await admin.start()
        try:
            described = await admin.describe_topics(list(self.topics))
        finally:
            await admin.close()
        found = {d["topic"]: sorted(p["partition"] for p in d["partitions"])
                 for d in described if d["error_code"] == 0 and d["partitions"]}
        missing = [t for t in self.topics if t not in found]
        if missing:
            raise RangeError(f"topic {missing[0]!r} does not exist on "
                             f"{self.settings.bootstrap_servers} (wrong ROLLGUARD_TOPIC_PREFIX? "
                             "`rollguard topics create` makes them)")
        return found

    async def _plan(self) -> list[_Plan]:
        from aiokafka.structs import TopicPartition

        tps = []
        ranks = {}
        for rank, topic in enumerate(self.topics):
            for partition in self.partitions[topic]:
                tp = TopicPartition(topic, partition)
                tps.append(tp)
                ranks[tp] = rank
        ends = await self.consumer.end_offsets(tps)
        starts = await self._offsets_at(tps, self.range.since_ms, ends, default=None)
        until_ms = self.range.until_ms
        stops = await self._offsets_at(tps, None if until_ms is None else until_ms + 1, ends,
                                       default=ends)
        plans = [_Plan(tp, ranks[tp], starts[tp], stops[tp]) for tp in tps]
        self.consumer.assign([p.tp for p in plans])
        for plan in plans:
            self.consumer.seek(plan.tp, plan.start)
        self.stats.partitions = len(plans)
        self.stats.planned = sum(max(0, p.stop - p.start) for p in plans)
        if self.progress is not None:
            self.progress.set_total(self.stats.planned)
        return plans

    async def _offsets_at(self, tps: list[Any], ts_ms: int | None, ends: dict[Any, int],
                          default: dict[Any, int] | None) -> dict[Any, int]:
        """First offset with a timestamp ≥ ``ts_ms`` (partition end if none)."""
        if ts_ms is None:
            if default is not None:
                return dict(default)
            return dict(await self.consumer.beginning_offsets(tps))
        found = await self.consumer.offsets_for_times({tp: ts_ms for tp in tps})
        return {tp: (found[tp].offset if found.get(tp) is not None else ends[tp]) for tp in tps}

    async def batches(self, plans: list[_Plan]) -> AsyncGenerator[list[bytes | DeadLetter], None]:
        readers = [
            _PartitionReader(self.consumer, plan, self.topics[plan.tp.topic],
                             self.range.until_ms, self.settings, self.stats, self.progress)
            for plan in plans
        ]
        heap: list[tuple[tuple[float, int, int, int], int, _Payload]] = []
        otlp = SampleBuilder(source="otlp")  # fed in the merged order, as the worker's
        for index, reader in enumerate(readers):
            first = await reader.next()
            if first is not None:
                heapq.heappush(heap, (first[0], index, first[1]))
        out: list[bytes | DeadLetter] = []
        while heap:
            _, index, payload = heapq.heappop(heap)
            if isinstance(payload, FanOut):
                out.extend(encode(sample) for sample in otlp.samples(list(payload.points)))
            else:
                out.append(payload)
            following = await readers[index].next()
            if following is not None:
                heapq.heappush(heap, (following[0], index, following[1]))
            if len(out) >= _BATCH:
                yield out
                out = []
        if out:
            yield out

    async def stop(self) -> None:
        if self.consumer is not None:
            await self.consumer.stop()


def read_range(
    settings: Settings,
    time_range: TimeRange,
    topics: dict[str, str] | None = None,
    *,
    stats: RangeStats | None = None,
    progress: ProgressReporter | None = None,
) -> Iterator[bytes | DeadLetter]:
    """Replay lines (and dead letters) of the input topics in ``time_range``, in event time.

    A plain iterator: it runs its own event loop, a batch of records at a time, so it can feed
    ``replay_lines`` directly. Raises ``RangeError`` for what the CLI reports as one line.
    """
    stats = stats if stats is not None else RangeStats()
    reader = _RangeReader(settings, time_range, topics or input_topics(settings), stats,
                          progress)
    loop = asyncio.new_event_loop()
    batches: AsyncGenerator[list[bytes | DeadLetter], None] | None = None
    try:
        plans = loop.run_until_complete(reader.start())
        batches = reader.batches(plans)
        while True:
            try:
                batch = loop.run_until_complete(batches.__anext__())
            except StopAsyncIteration:
                break
            yield from batch
    finally:
        if batches is not None:
            loop.run_until_complete(batches.aclose())
        loop.run_until_complete(reader.stop())
        loop.close()
