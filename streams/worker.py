"""The leader's loop: inputs in batches → event-time merge → the core → one transaction.

``DecisionEngine`` is a mode service that the faust worker runs beside its web server. While
this worker holds the lease (streams/lease.py) it:

1. starts a transactional producer (``transactional.id = {app_id}-engine``), which fences any
   earlier leader, then restores the last checkpoint from ``{app_id}-state-changelog``;
2. reads every partition of the four input topics with one consumer (``read_committed``) from
   the restored positions, in batches (``getmany``);
3. decodes each message — a bad one becomes a dead letter — and feeds the valid ones through
   the event-time merger (streams/ordering.py) to the same ``Pipeline`` replay uses;
4. commits a checkpoint — the changed service states, the fleet state, the input positions and
   every output record decided since the last one — as one Kafka transaction: at once when
   there are outputs; otherwise every ``commit_interval_seconds``, or less often when
   checkpoints get expensive (they are kept to ``CHECKPOINT_SHARE`` of the time).

Any Kafka error (the broker went away, a commit failed, this producer was fenced) ends the
lead: the in-memory state is dropped and, once the lease is held again, the loop restarts from
the last committed checkpoint. Outputs of an aborted checkpoint are never visible to
``read_committed`` consumers, and the core is deterministic, so the re-run emits the same
records — the same ``command_id``, the same signed bytes.

Why not a faust agent and faust tables: faust's per-event agent path costs ~83 µs per event
(docs/performance.md) and its table changelog writes are not atomic with the outputs and the
consumed offsets. Here state, outputs and positions commit together, once per batch.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gc
import logging
import time
from collections import Counter
from collections.abc import Coroutine
from contextlib import AsyncExitStack
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from mode import Service

from models.events import DeadLetter, OutputRecord
from models.policy import Policy
from models.state import watermark
from streams.approvers import ApproverDirectory
from streams.arrival import CREATE_TIME_ERROR, arrival_of
from streams.checkpoint import (
    Positions,
    Restored,
    StateRefused,
    key_material,
    restore,
    state_secret,
)
from streams.ingest.inputs import OTLP_TYPE, decode_foreign, is_foreign
from streams.ingest.outputs import cloudevent_headers
from streams.ingest.rates import SampleBuilder
from streams.keyring import retired_keys
from streams.lease import Lease
from streams.metrics import WorkerMetrics
from streams.ordering import EventTimeMerger
from streams.pipeline import Pipeline
from streams.serde import decode, encode
from streams.settings import Settings
from streams.topics import create_topics

__all__ = ["DecisionEngine", "IdleClock"]

log = logging.getLogger("rollguard.worker")

PROBE_SECONDS = 0.25
"""How often the broker's end offsets are asked for (the merger's 'caught up' confirmation)."""
PROBE_MIN_SECONDS = 0.02
"""After new input the look-up is made at once, but not more often than this."""
POLL_MS = 100
TAKE_CHUNK = 250
"""Messages per partition decoded before the merger releases (see ``_Leading._take``)."""
PROBE_TIMEOUT_MS = 10_000
REFUSED_RETRY_SECONDS = (60.0, 600.0)
"""A worker that refuses its state checks again after 60 s, then less often (up to 10 min)."""
CHECKPOINT_SHARE = 0.05
"""Checkpoints without outputs take at most this share of the time (their interval grows)."""
GC_THRESHOLD = 200_000
"""The collector's first-generation threshold while leading (Python's default is 700)."""
OUTPUT_TOPIC = {
    "dead_letter": "dead_letters",
    "decision": "decisions",
    "rollback_command": "commands",
    "approval_request": "approvals",
    "release_verdict": "verdicts",
}


class DecisionEngine(Service):
    """Runs the decision core while this worker is the leader (see module doc)."""

    def __init__(
        self,
        settings: Settings,
        policy: Policy,
        metrics: WorkerMetrics,
        *,
        approvers: ApproverDirectory | None = None,
        signing_key: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.settings = settings
        self.policy = policy
        self.metrics = metrics
        self.approvers = approvers
        self.signing_key = signing_key
        self.lease = Lease(settings)
        self.pipeline = Pipeline(policy, approvers=approvers, signing_key=signing_key,
                                 max_clock_skew_seconds=settings.max_clock_skew_seconds)
        self.state_secrets = _state_secrets(settings, signing_key)
        self.role = "starting"
        self.last_error: str | None = None
        self.last_checkpoint: float | None = None
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def on_start(self) -> None:
        created, _ = await create_topics(self.settings)
        if created:
            log.info("created topics %s", ", ".join(created))
        await self.lease.start()
        self._task = asyncio.create_task(self._run(), name="rollguard-engine")

    async def on_stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, 30)
            except (TimeoutError, asyncio.CancelledError):
                log.warning("engine did not stop within 30 s")
            except Exception:  # noqa: BLE001 - already logged by _run
                pass
        await self.lease.stop()

    def _set_role(self, role: str) -> None:
        self.role = role
        self.metrics.leader.set(1 if role == "leader" else 0)

    @property
    def running(self) -> bool:
        """False once the engine's task has ended (a bug, or shutting down)."""
        return self._task is None or not self._task.done()

    def health(self) -> dict[str, Any]:
        age = None if self.last_checkpoint is None else time.monotonic() - self.last_checkpoint
        role = self.role if self.running else "stopped"
        return {"role": role, "last_error": self.last_error, "seconds_since_checkpoint": age}

    async def _run(self) -> None:
        backoff = 1.0
        while not self._stopping.is_set():
            if not self.lease.held.is_set():
                self._set_role("standby")
                await _first(self.lease.held.wait(), self._stopping.wait())
                continue
            try:
                await self._lead()
                backoff = 1.0
            except StateRefused as err:
                # Not a crash to retry at once: the changelog needs a person (or a new
                # checkpoint by a worker that can read it). No decision is made meanwhile.
                self.last_error = f"state refused: {err}"
                self._set_role("refused")
                wait = min(max(backoff, REFUSED_RETRY_SECONDS[0]), REFUSED_RETRY_SECONDS[1])
                log.error("not leading: %s (checking again in %.0f s)", err, wait)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), wait)
                backoff = wait * 2
            except (Exception, asyncio.CancelledError) as err:  # noqa: BLE001 - restart
                # A CancelledError that is not this task's own cancellation comes from a client:
                # aiokafka's Fetcher.close() re-raises the cancellation of a fetch that was in
                # its retry back-off (the broker was down), so consumer.stop() raises it.
                # Letting it through ended this task for good: a live worker that never leads.
                if isinstance(err, asyncio.CancelledError) and _cancelling():
                    raise
                self.last_error = f"{type(err).__name__}: {err}"
                self._set_role("recovering")
                self.metrics.restarts.inc()
                log.warning("engine stopped (%s); restarting from the last checkpoint in %.0f s",
                            self.last_error, backoff, exc_info=err)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), backoff)
                backoff = min(backoff * 2, 30.0)

    async def _lead(self) -> None:
        settings = self.settings
        options = settings.kafka_client_options()
        self.lease.idle.clear()
        try:
            async with AsyncExitStack() as stack:
                producer = AIOKafkaProducer(
                    bootstrap_servers=settings.bootstrap_servers,
                    transactional_id=f"{settings.app_id}-engine",
                    enable_idempotence=True,
                    max_request_size=16 * 1024 * 1024,
                    # A checkpoint of 1,000 busy services is ~8 MB of state entries: with the
                    # default 16 KB batches its commit took ~0.7 s longer (docs/performance.md).
                    max_batch_size=1024 * 1024,
                    **options,
                )
                await producer.start()  # InitProducerId: fences the previous leader
                stack.push_async_callback(producer.stop)
                started = time.monotonic()
                restored = await self._restore()
                log.info("restored %d services from the changelog in %.2f s",
                         len(restored.state.services), time.monotonic() - started)
                consumer = AIOKafkaConsumer(
                    bootstrap_servers=settings.bootstrap_servers,
                    group_id=None,
                    enable_auto_commit=False,
                    isolation_level="read_committed",
                    auto_offset_reset="earliest",
                    max_partition_fetch_bytes=max(1048576, settings.max_message_bytes * 4),
                    **options,
                )
                await consumer.start()
                stack.push_async_callback(consumer.stop)
                probe = AIOKafkaConsumer(
                    bootstrap_servers=settings.bootstrap_servers, group_id=None,
                    isolation_level="read_committed",
                    # A broker that does not answer a look-up of end offsets in this time is
                    # treated as gone: the lead ends and restarts from the checkpoint.
                    request_timeout_ms=PROBE_TIMEOUT_MS, **options,
                )
                await probe.start()
                stack.push_async_callback(probe.stop)
                run = _Leading(self, producer, consumer, probe, restored)
                await run.start()
                self.last_error = None
                while True:
                    self._set_role("leader")
                    await run.loop(self._stopping, self.lease.lost)
                    if self._stopping.is_set() or not await self._regained(probe):
                        return
        finally:
            self.lease.idle.set()

    async def _regained(self, probe: AIOKafkaConsumer) -> bool:
        """After a revocation (its last checkpoint is committed): is the lease back, with the
        changelog untouched since? Then the state in memory is still the latest and the lead
        goes on without a restore.

        A member joining the group revokes every assignment before the sticky assignor hands
        the lease back to the same leader; without this every standby that starts would cost
        the leader a full restore and a re-read of what its merger held.
        """
        tp = TopicPartition(self.settings.state_topic, 0)
        mark = (await probe.end_offsets([tp]))[tp]
        self._set_role("standby")
        self.lease.idle.set()  # the hand-over may proceed
        try:
            await asyncio.wait_for(_first(self.lease.held.wait(), self._stopping.wait()),
                                   self.settings.session_timeout_seconds)
        except TimeoutError:
            return False
        if self._stopping.is_set() or not self.lease.held.is_set():
            return False
        self.lease.idle.clear()
        if (await probe.end_offsets([tp]))[tp] != mark:
            log.info("leadership regained, but another leader wrote meanwhile: restoring")
            return False
        log.info("leadership regained; the state in memory is current")
        return True

    async def _restore(self) -> Restored:
        """Read the state changelog to its end (committed entries only) and rebuild."""
        settings = self.settings
        consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.bootstrap_servers, group_id=None,
            enable_auto_commit=False, isolation_level="read_committed",
            max_partition_fetch_bytes=32 * 1024 * 1024,
            **settings.kafka_client_options(),
        )
        await consumer.start()
        try:
            tp = TopicPartition(settings.state_topic, 0)
            consumer.assign([tp])
            await consumer.seek_to_beginning(tp)
            end = (await consumer.end_offsets([tp]))[tp]
            entries: list[tuple[int, bytes | None, bytes | None]] = []
            while await consumer.position(tp) < end:
                batch = await consumer.getmany(tp, timeout_ms=1000)
                entries.extend((m.offset, m.key, m.value) for m in batch.get(tp, ()))
        finally:
            await consumer.stop()
        try:
            restored = restore(entries, self.state_secrets)
        except StateRefused:
            self.metrics.state_refused.labels(reason="inconsistent").inc()
            raise
        for refusal in restored.refused:
            self.metrics.state_refused.labels(reason=refusal.kind).inc()
            log.error("%s; the record was not used and is replaced by the next checkpoint",
                      refusal, extra={"offset": refusal.offset, "error": refusal.reason})
        self.pipeline = Pipeline(self.policy, approvers=self.approvers,
                                 signing_key=self.signing_key, state=restored.state,
                                 max_clock_skew_seconds=settings.max_clock_skew_seconds)
        return restored


class _Leading:
    """One lead: the clients, the merger and the bookkeeping between two restarts."""

    def __init__(self, engine: DecisionEngine, producer: AIOKafkaProducer,
                 consumer: AIOKafkaConsumer, probe: AIOKafkaConsumer,
                 restored: Restored) -> None:
        self.engine = engine
        self.settings = engine.settings
        self.metrics = engine.metrics
        self.pipeline = engine.pipeline
        self.producer = producer
        self.consumer = consumer
        self.probe = probe
        self.positions: Positions = restored.positions
        self.log = restored.log
        self.topic_types = {self.settings.topic_prefix + name: kind
                            for name, kind in self.settings.topics.inputs().items()}
        self.topic_types[self.settings.topic("otlp_metrics")] = OTLP_TYPE
        self.otlp_samples = SampleBuilder(source="otlp")
        """Cumulative OTLP series' last values: in memory, so a new leader primes them again."""
        self.ce_source = f"{self.settings.ingest.cloudevents_source}/{self.settings.app_id}"
        self.merger = EventTimeMerger()
        self.clock = IdleClock(self.settings.idle_advance_seconds)
        if restored.state.services:
            self.clock.seen(restored.state.fleet.clock)
        self.clock.arrived(time.monotonic())
        self.partitions: list[TopicPartition] = []
        self.pending: list[tuple[str, bytes | None, bytes, OutputRecord, Any]] = []
        self.dirty = False
        self.last_commit = time.monotonic()
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

    async def loop(self, stopping: asyncio.Event, lost: asyncio.Event) -> None:
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
        thresholds = gc.get_threshold()
        # Tens of thousands of records wait in the merger between two releases; with the
        # default threshold (700) the collector's passes over them and over the whole state
        # took a third of the worker's time (docs/performance.md).
        gc.set_threshold(GC_THRESHOLD, *thresholds[1:])
        try:
            while not stopping.is_set() and not lost.is_set():
                wait = POLL_MS
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
                self._observe()
                if commit is not None and (commit.done() or self.pending):
                    # Outputs wait for the transaction in flight, then go in the next one.
                    # A checkpoint encodes every changed service (~0.1-0.3 ms each); with thousands
                    # of busy services keep them to CHECKPOINT_SHARE of the time.
                    spacing = max(interval, await commit / CHECKPOINT_SHARE)
                    commit = None
                if commit is None and (
                    self.pending or (self.dirty and now - self.last_commit >= spacing)
                ):
                    # Taken now; committed while the loop goes on reading and deciding.
                    commit = asyncio.ensure_future(self.checkpoint())
            if commit is not None:
                await commit
                commit = None
            if self.dirty or self.pending:
                await self.checkpoint()  # a clean hand-over: the next leader starts from here
        finally:
            gc.set_threshold(*thresholds)
            if commit is not None and not commit.done():
                commit.cancel()
                with contextlib.suppress(BaseException):
                    await commit

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
                        record, letter = _arrived(record, message, reference)
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
                    times.append(record.arrival if stamp else record.ts)
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
        """When every input is caught up and quiet, let event time pass (IdleClock)."""
        if len(self.merger) or self.merger.watermark(now) != float("inf"):
            return
        target = self.clock.idle_target(now, time.time())
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
        touched, state.touched = state.touched, set()  # what the core changed since the last
        entries = self.log.entries(state, touched, self.positions.snapshot(buffered))
        pending, self.pending = self.pending, []
        self.dirty = False
        self.last_commit = started
        return self._commit(entries, pending, started)

    async def _commit(self, entries: list[tuple[bytes, bytes | None]],
                      pending: list[tuple[str, bytes | None, bytes, OutputRecord, Any]],
                      started: float) -> float:
        producer = self.producer
        state_topic = self.settings.state_topic
        await producer.begin_transaction()
        try:
            for topic, key, value, _, headers in pending:
                await producer.send(topic, value, key=key, headers=headers)
            for key, value in entries:
                await producer.send(state_topic, value, key=key, partition=0)
            await producer.commit_transaction()
        except BaseException:
            with contextlib.suppress(Exception):
                await producer.abort_transaction()
            raise
        for _, _, _, record, _ in pending:
            self.metrics.published(record)
        done = time.monotonic()
        self.engine.last_checkpoint = done
        self.metrics.checkpoints.inc()
        return done - started


class IdleClock:
    """Lets event time pass while every input is caught up and quiet.

    After ``idle_seconds`` without a message, the watermark moves to the newest event time
    seen (what replay does at the end of its input). If the input is live (its newest event
    time is about as far behind the wall clock as the quiet period), event time then follows the
    wall clock, so that a silent service's bake still ends and stale telemetry is still noticed
    when nothing at all arrives; a historical backlog stops at its newest event time.
    ``idle_seconds <= 0`` disables it.
    """

    def __init__(self, idle_seconds: float) -> None:
        self.idle_seconds = idle_seconds
        self.newest_event = float("-inf")
        self.last_arrival: float | None = None

    def seen(self, ts: float) -> None:
        if ts > self.newest_event:
            self.newest_event = ts

    def arrived(self, now: float) -> None:
        self.last_arrival = now

    def idle_target(self, now: float, wall_now: float) -> float | None:
        if self.idle_seconds <= 0 or self.last_arrival is None:
            return None
        quiet = now - self.last_arrival
        if quiet < self.idle_seconds or self.newest_event == float("-inf"):
            return None
        behind = wall_now - self.newest_event
        if behind > quiet + self.idle_seconds + 60:
            # Historical input (a backlog replayed): event time does not follow the wall clock.
            return self.newest_event
        return self.newest_event + (quiet - self.idle_seconds)


def _arrived(record: Any, message: Any, reference: float) -> tuple[Any, DeadLetter | None]:
    """An approval response with the broker's arrival time, or a dead letter if the broker
    did not stamp it (streams/arrival.py). Whatever ``received_at`` the sender wrote is
    replaced."""
    received_at = arrival_of(message.timestamp, message.timestamp_type)
    if received_at is None:
        letter = DeadLetter(
            topic=message.topic, partition=message.partition, offset=message.offset,
            key_b64=None if message.key is None else base64.b64encode(message.key).decode(),
            value_b64=base64.b64encode(message.value).decode(), error=CREATE_TIME_ERROR,
            ts=reference,
        )
        return None, letter
    return record.model_copy(update={"received_at": received_at}), None


def _state_secrets(settings: Settings, signing_key: Any) -> list[bytes]:
    """The state MAC keys: the first seals, all are accepted (the one derived from the signing
    key stays accepted after a state key is configured, so the switch needs no clean cut; so do
    those of gate keys that `rollguard keys rotate` retired, so a rotation needs none either)."""
    materials: list[bytes] = []
    if settings.state_key is not None:
        materials.append(settings.state_key.read_bytes())
    if signing_key is not None:
        materials.append(key_material(signing_key))
        materials.extend(key_material(key) for key in retired_keys(settings.signing_key))
    if not materials:
        log.warning("no ROLLGUARD_SIGNING_KEY or ROLLGUARD_STATE_KEY: state records are checked "
                    "for integrity only, not authenticated (anyone who can write the state "
                    "topic can alter decisions; nothing is ever executed from it)")
        materials.append(b"")
    return [state_secret(settings.app_id, material) for material in materials]


def _cancelling() -> bool:
    """True if the current task has been asked to stop (task.cancel())."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


async def _first(*aws: Any) -> None:
    """Wait until the first of ``aws`` completes; cancel the rest."""
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
