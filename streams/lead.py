"""One lead of the decision engine: inputs in batches → event-time merge → the core → one
Kafka transaction per checkpoint.

``Lead`` holds, between two restarts of a lead (streams/worker.py), the consumer of every input
partition, the probe of end offsets, the event-time merger and the bookkeeping of positions and
pending outputs. Each batch is decoded (a bad message becomes a dead letter; an OTLP message is
kept whole, an approval response takes the broker's arrival time), merged by event time and
handed to the same ``Pipeline`` replay uses; ``checkpoint`` commits the changed state, the
positions and every output decided since the last one as one transaction.

Outputs do not wait for a checkpoint (docs/worker.md, "Outputs before the state"): between
two checkpoints they go out at once in an *output transaction* of a second transactional
producer, with the ``emitted`` record that lets a leader restored from the last checkpoint
drop them when it derives them again. A checkpoint is thus taken only on its own schedule,
however many services changed since the last.

In the worker mode (``scale_out_slots > 1``, docs/worker.md "On Kafka: slots") a lead runs one
slot ``s``: it reads input partition ``p`` only when ``p % N == s``, and its pipeline's fleet
exchange is a ``PartitionBarrier`` fed by the fleet pump (``SlotLink``): the lead's reports go
out on an idempotent producer before any checkpoint is taken, the fleet topic's records are
delivered to the barrier, and a pipeline ``held`` at a window end is resumed when they let it
go on. No checkpoint is taken while it is held.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections import Counter, deque
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.partitioner import murmur2

from rollguard.models.engine import take_touched
from rollguard.models.events import ApprovalResponse, OutputRecord
from rollguard.models.state import watermark
from rollguard.streams.arrival import dead_letter_for, stamp_arrival
from rollguard.streams.checkpoint import (
    Positions,
    Restored,
    StateRefused,
    output_digest,
)
from rollguard.streams.collector import collector_for_state
from rollguard.streams.fleet_topic import (
    PartitionBarrier,
    barrier_snapshot,
    decode_report,
    encode_report,
    restore_barrier,
)
from rollguard.streams.ingest.inputs import OTLP_TYPE, decode_foreign, is_foreign
from rollguard.streams.ingest.outputs import cloudevent_headers
from rollguard.streams.ingest.rates import SampleBuilder
from rollguard.streams.ordering import EventTimeMerger, IdleClock
from rollguard.streams.serde import decode, encode

if TYPE_CHECKING:
    from rollguard.streams.pipeline import Pipeline
    from rollguard.streams.worker import DecisionEngine

__all__ = ["Lead", "SlotLink", "partition_of"]

log = logging.getLogger("rollguard.worker")

PROBE_SECONDS = 0.25
"""How often the broker's end offsets are asked for (the merger's 'caught up' confirmation)."""
PROBE_MIN_SECONDS = 0.02
"""After new input the look-up is made at once, but not more often than this."""
POLL_MS = 100
TAKE_CHUNK = 250
"""Messages per partition decoded before the merger releases (see ``Lead._take``)."""
CHECKPOINT_SHARE = 0.05
"""Checkpoints take at most this share of the time (their interval grows)."""
CLOSE_MARGIN_SECONDS = 0.25
"""A checkpoint is not started this close (plus 1.5 times the last one's taking) to the next
window close (``Lead._close_soon``)."""
CHEAP_CHECKPOINT_SECONDS = 0.05
"""A due checkpoint whose last taking was shorter than this carries the outputs itself."""
MAX_EMITTED = 1000
"""Outputs published outside a checkpoint before the next checkpoint is taken at once (the
``emitted`` record lists each of them, in every output transaction)."""
OUTPUT_TOPIC = {
    "dead_letter": "dead_letters",
    "decision": "decisions",
    "rollback_command": "commands",
    "approval_request": "approvals",
    "release_verdict": "verdicts",
}


Output = tuple[str, bytes | None, bytes, OutputRecord, Any]
"""An output to publish: topic, key, value, the record, headers."""

HELD_POLL_MS = 10
"""Input poll while the pipeline waits at the fleet barrier (fleet reports are read between)."""


@functools.lru_cache(maxsize=65536)
def partition_of(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner (murmur2) gives a record keyed ``key``
    (remembered: the worker mode asks it for every record, and murmur2 is pure Python, ~2 µs)."""
    return int(murmur2(key) & 0x7FFFFFFF) % partitions


def misrouted(service: str | None, partition: int, partitions: int) -> str | None:
    """Why a record read from ``partition`` may not be decided by the slot that reads it
    (worker mode), or None. A slot owns its services' state and answers for them to the
    fleet by partition, so a service's every record must be on ``partition_of(service)``:
    Kafka's default partitioner with the service name as key (DESIGN §2).

    >>> misrouted("checkout", partition_of(b"checkout", 6), 6) is None
    True
    >>> misrouted(None, 0, 6).startswith("no service")
    True
    """
    if service is None:
        return ("no service: in the worker mode every record must name its service, which "
                "routes it to the slot that owns it (`rollguard approve --service` does)")
    owner = partition_of(service.encode(), partitions)
    if owner == partition:
        return None
    return (f"service {service!r} belongs to partition {owner} of {partitions}, not "
            f"{partition}: produce with Kafka's default partitioner, key = the service name")


@dataclass
class SlotLink:
    """A slot lead's link to the fleet: which slot, its report producer (idempotent, not
    transactional: a report must be visible while its batch waits), the fleet topic's reader."""

    slot: int
    slots: int
    reports: AIOKafkaProducer
    fleet: AIOKafkaConsumer
    topic: str
    secrets: list[bytes]


class Lead:
    """One lead: the clients, the merger and the bookkeeping between two restarts."""

    def __init__(self, engine: DecisionEngine, producer: AIOKafkaProducer,
                 outputs: AIOKafkaProducer, consumer: AIOKafkaConsumer,
                 probe: AIOKafkaConsumer, restored: Restored, *,
                 pipeline: Pipeline | None = None, link: SlotLink | None = None) -> None:
        self.engine = engine
        self.settings = engine.settings
        self.metrics = engine.metrics
        self.pipeline = pipeline if pipeline is not None else engine.pipeline
        self.link = link
        self.barrier: PartitionBarrier | None = None
        self.fleet_next = 0
        """The fleet topic's next offset to deliver (slot mode)."""
        self.sent_through = float("-inf")
        self.held_since: float | None = None
        """When the pipeline began to wait at the fleet barrier (for the wait metric)."""
        self.backlog: deque[tuple[Any, bytes, Any, Any]] = deque()
        """Released records not yet processed: the pipeline is held at the fleet barrier."""
        self.producer = producer
        self.outputs = outputs
        """The output transactions' producer (its own transactional id: ``…-outputs``)."""
        self.consumer = consumer
        self.probe = probe
        self.positions: Positions = restored.positions
        self.log = restored.log
        self.committed = restored.log.seq
        """The last checkpoint committed (or restored)."""
        self.emitted = list(restored.emitted)
        """Outputs published outside a checkpoint that a restore of ``committed`` derives again."""
        self.suppress = Counter(digest for _, digest in restored.emitted)
        """Of those, the ones this lead has not derived again yet: dropped when it does."""
        self.sending: asyncio.Future[float] | None = None
        """The output transaction in flight."""
        self.topic_types = {self.settings.topic_prefix + name: kind
                            for name, kind in self.settings.topics.inputs().items()}
        self.topic_types[self.settings.topic("otlp_metrics")] = OTLP_TYPE
        self.otlp_samples = SampleBuilder(source="otlp")
        """Cumulative OTLP series' last values: checkpointed with the input positions."""
        if restored.rates is not None:
            try:
                self.otlp_samples.restore(restored.rates)
            except ValueError as err:  # authentic but not understood: one interval is lost
                log.error("%s; each cumulative OTLP series primes again", err)
        self.ce_source = f"{self.settings.ingest.cloudevents_source}/{self.settings.app_id}"
        self.merger = EventTimeMerger()
        self.clock = IdleClock(self.settings.idle_advance_seconds)
        if restored.state.services:
            self.clock.seen(restored.state.fleet.clock)
        self.clock.arrived(time.monotonic())
        self.partitions: list[TopicPartition] = []
        self.routed_by: int | None = None  # worker mode: the input partition count (misrouted)
        self.pending: list[Output] = []
        self.dirty = False
        self.last_commit = time.monotonic()
        self.taking = 0.0
        """How long the last checkpoint took to take (the loop waited)."""
        self.last_probe = float("-inf")
        self.primed = False
        self.closed_until: dict[tuple[int, float], float] = {}

    async def start(self) -> None:
        consumer = self.consumer
        partitions: list[TopicPartition] = []
        for topic in self.topic_types:
            found = await self.producer.partitions_for(topic)
            if not found:
                raise RuntimeError(f"input topic {topic} does not exist; "
                                   "run `rollguard topics create`")
            partitions.extend(TopicPartition(topic, p) for p in sorted(found))
        if self.link is not None:
            partitions = await self._slot_start(partitions)
        self.partitions = partitions
        consumer.assign(partitions)
        for tp in partitions:
            key = (tp.topic, tp.partition)
            resume = self.positions.next_offset.get(key)
            if resume is None:
                await consumer.seek_to_beginning(tp)
                self.positions.next_offset[key] = await consumer.position(tp)
            else:
                consumer.seek(tp, resume)
            self.merger.set_lag(key, None, time.monotonic())

    async def _slot_start(self, partitions: list[TopicPartition]) -> list[TopicPartition]:
        """This slot's input partitions; its barrier, restored with the checkpoint's."""
        link = self.link
        assert link is not None
        counts = Counter(tp.topic for tp in partitions)
        if len(set(counts.values())) > 1:  # checked at start too (topics.check_slots)
            raise RuntimeError(f"input topics are not co-partitioned: {dict(counts)}")
        total = max(counts.values())
        owned = {p for p in range(total) if p % link.slots == link.slot}
        barrier = PartitionBarrier(
            f"slot-{link.slot}", owned, total, lambda s: partition_of(s.encode(), total)
        )
        try:
            resume = restore_barrier(barrier, self.positions.fleet)
        except ValueError as err:  # partitions were added: the slot's state is not its own
            raise StateRefused(str(err)) from None
        self.pipeline.state.exchange = barrier
        self.barrier = barrier
        tp = TopicPartition(link.topic, 0)
        link.fleet.assign([tp])
        if resume is None:
            await link.fleet.seek_to_beginning(tp)
            self.fleet_next = await link.fleet.position(tp)
        else:
            link.fleet.seek(tp, resume)
            self.fleet_next = resume
        self.routed_by = total
        log.info("slot %d leads input partitions %s of %d", link.slot, sorted(owned), total)
        return [tp for tp in partitions if tp.partition in owned]

    async def _pump(self) -> None:
        """Deliver the fleet topic's new reports to the barrier; resume a held pipeline."""
        link, barrier = self.link, self.barrier
        assert link is not None and barrier is not None
        batch = await link.fleet.getmany(timeout_ms=0)
        for messages in batch.values():
            for message in messages:
                self.fleet_next = message.offset + 1
                if message.key is None or message.value is None:
                    continue
                try:
                    wire = decode_report(link.secrets, message.key, message.value)
                except (ValueError, TypeError, KeyError) as err:
                    log.error("fleet record at offset %d ignored: %s", message.offset, err)
                    continue
                barrier.deliver(wire)
        pipeline = self.pipeline
        if pipeline.held:
            now = time.monotonic()
            if self.held_since is None:
                self.held_since = now
            for output in pipeline.resume():
                self._emit(output, output.service.encode())
            if not pipeline.held:
                self.metrics.fleet_waits.observe(now - self.held_since)
                self.held_since = None
                self._drain()
                if pipeline.held:
                    self.held_since = now
        await self._send_reports()

    async def _send_reports(self) -> None:
        """Send this slot's queued reports and wait until the broker has them."""
        link, barrier = self.link, self.barrier
        assert link is not None and barrier is not None
        if not barrier.outgoing:
            return
        outgoing, barrier.outgoing = barrier.outgoing, []
        sent = []
        for wire in outgoing:
            if not wire.report.facts and wire.report.through <= self.sent_through:
                continue  # says nothing new
            self.sent_through = max(self.sent_through, wire.report.through)
            key, value = encode_report(link.secrets[0], wire)
            sent.append(await link.reports.send(link.topic, value, key=key, partition=0))
        await asyncio.gather(*sent)

    def _drain(self) -> None:
        """Process released records until the backlog is empty or the pipeline is held."""
        pipeline = self.pipeline
        backlog = self.backlog
        handled = self.positions.handled
        emit = self._emit
        count = 0
        while backlog and not pipeline.held:
            record, raw, key, offset = backlog.popleft()
            if key is not None:
                handled[key].append(offset)
                count += 1
            if record.type == OTLP_TYPE:
                samples = self.otlp_samples.samples(list(record.points))
                backlog.extendleft((s, b"", None, None) for s in reversed(samples))
                continue
            for output in pipeline.process(record, raw):
                emit(output, output.service.encode())
        self.metrics.events_processed.inc(count)
        self.dirty = True

    @property
    def waiting(self) -> bool:
        """Held at the fleet barrier (or records wait behind it): no checkpoint now."""
        return self.pipeline.held or bool(self.backlog)

    async def loop(self, stopping: asyncio.Event, lost: asyncio.Event) -> None:
        # Tens of thousands of records wait in the merger between two releases; with the
        # default threshold (700) the collector's passes over them and over the whole state
        # took a third of the worker's time (docs/performance.md).
        with collector_for_state():
            await self._loop(stopping, lost)

    async def _loop(self, stopping: asyncio.Event, lost: asyncio.Event) -> None:
        consumer = self.consumer
        interval = self.settings.commit_interval_seconds
        spacing = interval  # between two checkpoints without outputs
        commit: asyncio.Future[float] | None = None  # the checkpoint transaction in flight
        unconfirmed = False  # something arrived that no end-offsets look-up has covered yet
        # The merger's live-feed rule reorders a live feed by at most live_within seconds;
        # within the allowed lateness that never changes a decision (streams/ordering.py).
        policy = self.engine.policy
        lateness = min([policy.defaults.allowed_lateness_seconds,
                        *(rules.allowed_lateness_seconds for rules in policy.services.values())])
        self.merger.live_within = min(self.merger.live_within, lateness)
        try:
            while not stopping.is_set() and not lost.is_set():
                wait = HELD_POLL_MS if self.waiting else POLL_MS
                if unconfirmed:
                    since = time.monotonic() - self.last_probe
                    wait = max(0, min(wait, int((PROBE_MIN_SECONDS - since) * 1000)))
                batch = await consumer.getmany(timeout_ms=wait)
                now = time.monotonic()
                if batch:
                    unconfirmed = True
                    for tp in batch:
                        await self._read_lag(tp)
                since = now - self.last_probe
                if since >= PROBE_SECONDS or (unconfirmed and since >= PROBE_MIN_SECONDS):
                    # While another input is idle, events wait for a look-up made after they
                    # arrived (streams/ordering.py): ask at once rather than on the next period,
                    # and before the batch is taken, so that it can be released as it is taken.
                    unconfirmed = False
                    await self._probe()
                if batch:
                    self._take(batch, now)
                self._release(time.monotonic())
                self._idle(time.monotonic())
                if self.link is not None:
                    await self._pump()
                self._observe()
                if commit is not None and commit.done():
                    # A checkpoint encodes every changed service (~0.1 ms each); with thousands
                    # of busy services keep them to CHECKPOINT_SHARE of the time.
                    spacing = max(interval, await commit / CHECKPOINT_SHARE)
                    commit = None
                if self.sending is not None and self.sending.done():
                    await self.sending  # a failed output transaction ends the lead
                    self.sending = None
                due = self.dirty and now - self.last_commit >= spacing and (
                    not self._close_soon() or now - self.last_commit >= 2 * spacing)
                crowded = len(self.emitted) + len(self.pending) > MAX_EMITTED
                can_take = commit is None and self.sending is None and not self.waiting
                # A cheap checkpoint due now carries the outputs itself (a steady trickle of
                # outputs must not keep putting checkpoints off); an expensive one (a window
                # close changed every service) is taken once they are out.
                carried = crowded or (due and self.taking < CHEAP_CHECKPOINT_SECONDS)
                if self.pending and self.sending is None and not (carried and can_take):
                    self.sending = asyncio.ensure_future(self._publish())
                elif can_take and (due or self.pending):
                    # Taken now; committed while the loop goes on reading and deciding. Never
                    # beside an output transaction: if that one failed after this committed,
                    # its outputs would be neither visible nor derived again.
                    commit = asyncio.ensure_future(self.checkpoint())
            if commit is not None:
                await commit
                commit = None
            if self.sending is not None:
                await self.sending
                self.sending = None
            if self.link is not None and not self.waiting:
                await self._send_reports()
            if (self.dirty or self.pending) and not self.waiting:
                await self.checkpoint()  # a clean hand-over: the next leader starts from here
            elif self.pending:
                await self._publish()  # held at the barrier: the next leader drops them
        finally:
            for running in (commit, self.sending):
                if running is not None and not running.done():
                    running.cancel()
                    with contextlib.suppress(BaseException):
                        await running

    def _close_soon(self) -> bool:
        """Would a checkpoint taken now still be encoding when the next window closes? In a
        live fleet every service reports every few seconds, so each checkpoint encodes most
        of them (seconds at 10,000): taken just before a close, it would hold back that
        close's decisions; taken after it, it has a whole window. A checkpoint is put off
        for this at most once its spacing again."""
        fleet = self.pipeline.state.fleet
        return fleet.next_due - fleet.clock < 1.5 * self.taking + CLOSE_MARGIN_SECONDS

    def _take(self, batch: dict[TopicPartition, list[Any]], now: float) -> None:
        """Decode a fetched batch: dead letters to publish, valid records into the merger.

        A fetch holds thousands of messages per partition. They are taken in rounds of up to
        ``TAKE_CHUNK`` per partition, and the merger releases after each round, so a record
        reaches the core while it is still in the CPU's caches and few wait in memory (where
        the collector traverses them). A partition with messages left for a later round counts
        as not caught up, so nothing passes what it has not delivered yet. Per message there
        is only the decode and two appends; the rest is done per partition and round.
        """
        settings = self.settings
        skew = settings.max_clock_skew_seconds
        max_bytes = settings.max_message_bytes
        positions = self.positions
        merger = self.merger
        reference = time.time()
        newest = float("-inf")
        work = []
        for tp, messages in batch.items():
            if messages:
                key = (tp.topic, tp.partition)
                lag = merger.lag(key)
                # Unknown lag: the merger would stop waiting for this partition after a while,
                # so it is taken whole.
                chunk = TAKE_CHUNK if lag is not None else len(messages)
                work.append((key, messages, self.topic_types.get(tp.topic), lag, chunk))
        start = 0
        while work:
            for key, messages, expected, lag, chunk in work:
                topic, partition = key
                skip = positions.skip.get(key)  # Positions.seen, hoisted out of the loop
                stamp = expected == "approval_response"  # timed by the broker (DESIGN §6)
                times: list[float] = []
                items: list[tuple[Any, bytes, tuple[str, int], int]] = []
                for message in messages[start:start + chunk]:
                    offset = message.offset
                    if skip and offset in skip:
                        self.metrics.redelivered(topic)
                        continue
                    value = message.value
                    if is_foreign(expected, message.headers):
                        decoded = decode_foreign(
                            value, key=message.key, headers=message.headers, topic=topic,
                            partition=partition, offset=offset, expected=expected,
                            otlp=settings.ingest.otlp, reference_time=reference,
                            max_clock_skew_seconds=skew, max_message_bytes=max_bytes,
                            unmapped=self._unmapped,
                        )
                    else:
                        decoded = decode(
                            value, key=message.key, topic=topic, partition=partition,
                            offset=offset, expected_type=expected, reference_time=reference,
                            max_clock_skew_seconds=skew, max_message_bytes=max_bytes,
                        )
                    record = decoded.record
                    letter = decoded.dead_letter
                    if stamp and record is not None:
                        record, letter = stamp_arrival(record, message, reference)
                    if record is not None and self.routed_by is not None:
                        error = misrouted(record.service, partition, self.routed_by)
                        if error is not None:
                            record, letter = None, dead_letter_for(message, error, reference)
                    if record is None:
                        if letter is None:  # nothing rollguard maps (unmapped OTLP metrics)
                            positions.done(key, offset)
                            continue
                        self.metrics.dead_letter(topic)
                        log.warning(
                            "dead letter %s[%s]@%s: %s", topic, partition, offset,
                            letter.error, extra={"topic": topic, "partition": partition,
                                                 "offset": offset, "error": letter.error},
                        )
                        self._emit(letter, message.key, message.headers)
                        positions.done(key, offset)
                        continue
                    times.append(
                        record.arrival if isinstance(record, ApprovalResponse) else record.ts
                    )
                    items.append((record, value, key, offset))
                if items:
                    merger.add_many(key, times, items, now)
                    newest = max(newest, max(times))
                    if expected:
                        self.metrics.events_in.labels(type=expected).inc(len(items))
                    else:
                        for kind, count in Counter(item[0].type for item in items).items():
                            self.metrics.events_in.labels(type=kind).inc(count)
                left = len(messages) - start - chunk
                if left > 0:
                    merger.set_lag(key, (lag or 0) + left)
                else:
                    if lag is not None and chunk < len(messages):
                        merger.set_lag(key, lag)  # what the fetch response or the probe said
                    positions.read(key, messages[-1].offset)  # offsets ascend in a partition
            start += TAKE_CHUNK
            work = [entry for entry in work if entry[4] == TAKE_CHUNK and len(entry[1]) > start]
            self.dirty = True
            if work:
                self._release(time.monotonic())
        self.clock.seen(newest)
        self.clock.arrived(now)

    def _unmapped(self, points: dict[str, int]) -> None:
        for name in self.metrics.unmapped(points):
            log.info("OTLP metric %r is not mapped (no ingest.otlp rule names it): its points "
                     "are skipped and counted in rollguard_otlp_unmapped_points_total; this is "
                     "logged once per metric name", name, extra={"metric": name})

    async def _read_lag(self, tp: TopicPartition) -> None:
        """Unread messages of ``tp`` as the last fetch response saw them (may be stale)."""
        end = self.consumer.last_stable_offset(tp)
        if end is None:
            end = self.consumer.highwater(tp)
        if end is not None and end >= 0:
            position = await self.consumer.position(tp)
            self.merger.set_lag((tp.topic, tp.partition), max(0, end - position))

    async def _probe(self) -> None:
        """Ask the broker (on its own connection) how far each input partition goes."""
        asked = time.monotonic()  # what arrived before now is covered by the answer
        ends = await self.probe.end_offsets(self.partitions)
        for tp in self.partitions:
            end = ends.get(tp)
            if end is None:
                continue
            position = await self.consumer.position(tp)
            lag = max(0, end - position)
            self.merger.set_lag((tp.topic, tp.partition), lag, asked, confirmed=True)
            self.metrics.lag(tp.topic, tp.partition, lag)
        self.last_probe = asked
        self.primed = True

    def _release(self, now: float) -> None:
        if not self.primed:
            return  # the merger does not know every partition's position yet
        if self.link is not None:
            if not self.waiting:
                self.backlog.extend(self.merger.release(now, time.time()))
                if self.backlog:
                    self._drain()
            return
        released = self.merger.release(now, time.time())
        if not released:
            return
        process = self.pipeline.process
        handled = self.positions.handled  # Positions.done, inlined: one append per event
        emit = self._emit
        for record, raw, key, offset in released:
            handled[key].append(offset)
            if record.type == OTLP_TYPE:
                # One OTLP message, released whole: its samples, oldest first.
                for sample in self.otlp_samples.samples(list(record.points)):
                    for output in process(sample, b""):
                        emit(output, output.service.encode())
                continue
            outputs = process(record, raw)
            if outputs:
                for output in outputs:
                    emit(output, output.service.encode())
        self.metrics.events_processed.inc(len(released))
        self.dirty = True

    def _idle(self, now: float) -> None:
        """When every input is caught up and quiet, let event time pass (IdleClock).

        A slot's lead also follows the other slots' progress (their reports' ``through``), as
        one leader's clock follows every partition: its windows close, and its reports let the
        others' claims pass, even when its own partitions have nothing to say."""
        if len(self.merger) or self.merger.watermark(now) != float("inf"):
            return
        if self.waiting:
            return
        target = self.clock.idle_target(now, time.time())
        barrier = self.barrier
        if barrier is not None:
            others = [t for p, t in barrier.through.items() if p not in barrier.owned]
            if others and (target is None or max(others) > target):
                target = max(others)
        if target is None or target <= self.pipeline.state.fleet.floor:
            return
        for output in self.pipeline.advance(target):
            self._emit(output, output.service.encode())
        self.dirty = True

    def _observe(self) -> None:
        """Window-close lag: wall time from the earliest moment a window may close (its end
        plus the allowed lateness) to the moment the watermark closed it."""
        fleet = self.pipeline.state.fleet
        self.metrics.progress(len(self.merger), fleet.clock)
        wall = time.time()
        for width, lateness in fleet.configs:
            closed = int(watermark(fleet, lateness) // width) * width
            last = self.closed_until.get((width, lateness))
            if last is not None and closed > last:
                self.metrics.window_close_lag.observe(max(0.0, wall - (closed + lateness)))
            self.closed_until[(width, lateness)] = closed

    def _emit(self, record: Any, key: bytes | None, headers: Any = None) -> None:
        """Queue an output; a dead letter keeps the original message's ``headers``."""
        topic = self.settings.topic(OUTPUT_TOPIC[record.type])
        value = encode(record)
        if self.suppress:
            digest = output_digest(topic, key, value)
            left = self.suppress.get(digest, 0)
            if left:
                # Published before the restore, in an output transaction: derived again now.
                if left == 1:
                    del self.suppress[digest]
                else:
                    self.suppress[digest] = left - 1
                self.metrics.outputs_rederived.inc()
                return
        if record.type == "dead_letter" and headers:
            out = [(str(name), bytes(v or b"")) for name, v in headers]
        else:
            out = cloudevent_headers(record, value, self.ce_source)
        self.pending.append((topic, key, value, record, out))

    def checkpoint(self) -> Coroutine[Any, Any, float]:
        """Take a checkpoint now — the state, the positions and every output decided so far —
        and return the transaction that commits them as one; it returns its duration (s).

        What is taken is bytes, so the loop may read and decide on while the transaction is
        sent; a failed commit ends the lead (``loop`` awaits it) and nothing of it is visible.
        """
        started = time.monotonic()
        buffered = ((item[2], item[3]) for item in self.merger.items())
        state = self.pipeline.state
        touched = take_touched(state)  # what the core changed since the last
        if self.barrier is not None:
            assert not self.barrier.outgoing and not self.waiting, "reports are sent first"
            self.positions.fleet = barrier_snapshot(self.barrier, self.fleet_next)
        entries = self.log.entries(state, touched, self.positions.snapshot(buffered),
                                   self.otlp_samples.snapshot())
        pending, self.pending = self.pending, []
        self.dirty = False
        self.last_commit = started
        self.taking = time.monotonic() - started
        self.metrics.checkpoint_encode_seconds.observe(self.taking)
        return self._commit(entries, pending, started, self.log.seq)

    async def _publish(self) -> float:
        """Publish the outputs decided so far in an output transaction, with the ``emitted``
        record that a leader restored from the last committed checkpoint drops them by."""
        started = time.monotonic()
        pending, self.pending = self.pending, []
        taken = self.log.seq  # the last checkpoint taken: these were derived after it
        self.emitted.extend((taken, output_digest(topic, key, value))
                            for topic, key, value, _, _ in pending)
        await self._transaction(self.outputs, pending,
                                [self.log.emitted_entry(self.committed, self.emitted)])
        spent = time.monotonic() - started
        self.metrics.output_commit_seconds.observe(spent)
        return spent

    async def _commit(self, entries: list[tuple[bytes, bytes | None]],
                      pending: list[Output],
                      started: float, seq: int) -> float:
        await self._transaction(self.producer, pending, entries)
        done = time.monotonic()
        self.committed = seq
        # What this checkpoint's state holds is not derived again after a restore of it.
        self.emitted = [item for item in self.emitted if item[0] >= seq]
        self.engine.last_checkpoint = done
        self.metrics.checkpoints.inc()
        self.metrics.checkpoint_seconds.observe(done - started)
        return done - started

    async def _transaction(self, producer: AIOKafkaProducer,
                           pending: list[Output],
                           entries: list[tuple[bytes, bytes | None]]) -> None:
        """One Kafka transaction: the outputs, then the changelog entries (this lead's
        partition of the state topic)."""
        state_topic = self.settings.state_topic
        partition = 0 if self.link is None else self.link.slot
        await producer.begin_transaction()
        try:
            for topic, out_key, value, _, headers in pending:
                await producer.send(topic, value, key=out_key, headers=headers)
            for state_key, state_value in entries:
                await producer.send(state_topic, state_value, key=state_key,
                                    partition=partition)
            await producer.commit_transaction()
        except BaseException:
            with contextlib.suppress(Exception):
                await producer.abort_transaction()
            raise
        for _, _, _, record, _ in pending:
            self.metrics.published(record)
