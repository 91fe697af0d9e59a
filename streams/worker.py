"""The decision engine's life: lease, restore, lead, and start over after any Kafka error.

``DecisionEngine`` is a mode service that the faust worker runs beside its web server. While
this worker holds the lease (streams/lease.py) it (the lead itself: ``Lead``, streams/lead.py):

1. starts a transactional producer (``transactional.id = {app_id}-engine``), which fences any
   earlier leader, then restores the last checkpoint from ``{app_id}-state-changelog``;
2. reads every partition of the four input topics with one consumer (``read_committed``) from
   the restored positions, in batches (``getmany``);
3. decodes each message — a bad one becomes a dead letter — and feeds the valid ones through
   the event-time merger (streams/ordering.py) to the same ``Pipeline`` replay uses;
4. publishes each output at once in an output transaction (a second transactional producer,
   ``{app_id}-engine-outputs``), and commits a checkpoint — the changed service states, the
   fleet state, the input positions and the outputs not yet published — as one Kafka
   transaction every ``commit_interval_seconds``, or less often when checkpoints get
   expensive (they are kept to ``CHECKPOINT_SHARE`` of the time). A leader restored from a
   checkpoint drops the outputs it derives again that were already published (the
   ``emitted`` record, streams/checkpoint.py).

Any Kafka error (the broker went away, a commit failed, this producer was fenced) ends the
lead: the in-memory state is dropped and, once the lease is held again, the loop restarts from
the last committed checkpoint. Outputs of an aborted checkpoint are never visible to
``read_committed`` consumers, and the core is deterministic, so the re-run emits the same
records — the same ``command_id``, the same signed bytes.

Worker mode (``scale_out_slots = N > 1``, docs/worker.md "On Kafka: slots"): the lease group
hands out the ``N`` partitions of the leader topic (slots); this worker runs one lead per slot
it holds, each with its own pipeline, transactional id ``{app_id}-engine-{s}``, changelog
partition ``s`` and fleet link (streams/lead.py). A revocation ends every lead of this worker
(each commits a last checkpoint); the next assignment starts a lead, restored from its
changelog partition, for each slot held then.

Why not a faust agent and faust tables: faust's per-event agent path costs ~83 µs per event
(docs/performance.md) and its table changelog writes are not atomic with the outputs and the
consumed offsets. Here state, outputs and positions commit together, once per batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from contextlib import AsyncExitStack
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from mode import Service

from rollguard.models.policy import Policy
from rollguard.streams.approvers import ApproverDirectory
from rollguard.streams.checkpoint import (
    Restored,
    StateRefused,
    key_material,
    restore,
    state_secret,
)
from rollguard.streams.keyring import retired_keys
from rollguard.streams.lead import Lead, SlotLink
from rollguard.streams.lease import Lease
from rollguard.streams.metrics import WorkerMetrics
from rollguard.streams.pipeline import Pipeline
from rollguard.streams.settings import Settings
from rollguard.streams.topics import SlotsMismatch, check_slots, create_topics

__all__ = ["DecisionEngine"]

log = logging.getLogger("rollguard.worker")

PROBE_TIMEOUT_MS = 10_000
REFUSED_RETRY_SECONDS = (60.0, 600.0)
"""A worker that refuses its state checks again after 60 s, then less often (up to 10 min)."""


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
        self.pipelines: dict[int, Pipeline] = {}
        """Worker mode: the pipeline of each slot led since this process started."""
        self.leading: set[int] = set()
        self.role = "starting"
        self.last_error: str | None = None
        self.last_checkpoint: float | None = None
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def on_start(self) -> None:
        created, _ = await create_topics(self.settings)
        if created:
            log.info("created topics %s", ", ".join(created))
        try:
            await check_slots(self.settings)
        except SlotsMismatch as err:
            log.error("not starting: %s", err)
            raise
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

    def counts_by_type(self) -> dict[str, int]:
        """Events by type the pipelines of this process have processed."""
        if not self.pipelines:
            by_type: dict[str, int] = self.pipeline.counts_by_type()
            return by_type
        total: dict[str, int] = {}
        for pipeline in self.pipelines.values():
            for kind, count in pipeline.counts_by_type().items():
                total[kind] = total.get(kind, 0) + count
        return dict(sorted(total.items()))

    def counts_by_service(self) -> dict[str, dict[str, int]]:
        """Events by service and type the pipelines of this process have processed."""
        if not self.pipelines:
            by_service: dict[str, dict[str, int]] = self.pipeline.counts_by_service()
            return by_service
        merged: dict[str, dict[str, int]] = {}
        for pipeline in self.pipelines.values():
            merged.update(pipeline.counts_by_service())  # a service is in one slot
        return dict(sorted(merged.items()))

    def health(self) -> dict[str, Any]:
        age = None if self.last_checkpoint is None else time.monotonic() - self.last_checkpoint
        role = self.role if self.running else "stopped"
        out: dict[str, Any] = {"role": role, "last_error": self.last_error,
                               "seconds_since_checkpoint": age}
        if self.settings.scale_out_slots > 1:
            out["slots"] = sorted(self.leading)
        return out

    async def _run(self) -> None:
        if self.settings.scale_out_slots > 1:
            await self._run_slots()
            return
        await self._keep_leading()

    async def _run_slots(self) -> None:
        """Worker mode: one lead per held slot, until the assignment changes."""
        while not self._stopping.is_set():
            if not self.lease.held.is_set():
                self._set_role("standby")
                await _first(self.lease.held.wait(), self._stopping.wait())
                continue
            slots = sorted(self.lease.slots)
            self.lease.idle.clear()
            try:
                await asyncio.gather(*(self._keep_leading(s) for s in slots))
            finally:
                self.leading.clear()
                self.lease.idle.set()

    async def _keep_leading(self, slot: int | None = None) -> None:
        """Lead ``slot`` (the worker mode) or the whole fleet; start over after any error.

        The single leader waits as a standby whenever the lease is not held and goes on until
        the worker stops; a slot's lead ends when the lease loses its assignment (the next one
        starts a lead per slot held then). After an error the lead restarts from its last
        checkpoint with back-off (1 s doubling to 30 s); a refused state is checked again after
        60 s, then less often (up to 10 min): no restart loop, no decision meanwhile.
        """
        lost = self.lease.lost
        where = "" if slot is None else f"slot {slot}: "
        backoff = 1.0
        while not self._stopping.is_set():
            if slot is not None and lost.is_set():
                return
            if slot is None and not self.lease.held.is_set():
                self._set_role("standby")
                await _first(self.lease.held.wait(), self._stopping.wait())
                continue
            try:
                await self._lead(slot)
                backoff = 1.0
                continue
            except StateRefused as err:
                # Not a crash to retry at once: the changelog needs a person (or a new
                # checkpoint by a worker that can read it). No decision is made meanwhile.
                self.last_error = f"{where}state refused: {err}"
                self._set_role("refused")
                wait = min(max(backoff, REFUSED_RETRY_SECONDS[0]), REFUSED_RETRY_SECONDS[1])
                log.error("%snot leading: %s (checking again in %.0f s)",
                          "" if slot is None else f"slot {slot} ", err, wait)
                backoff = wait * 2
            except (Exception, asyncio.CancelledError) as err:  # noqa: BLE001 - restart
                # A CancelledError that is not this task's own cancellation comes from a client:
                # aiokafka's Fetcher.close() re-raises the cancellation of a fetch that was in
                # its retry back-off (the broker was down), so consumer.stop() raises it.
                # Letting it through ended this task for good: a live worker that never leads.
                if isinstance(err, asyncio.CancelledError) and _cancelling():
                    raise
                self.last_error = f"{where}{type(err).__name__}: {err}"
                self._set_role("recovering")
                self.metrics.restarts.inc()
                wait = backoff
                if slot is None:
                    log.warning("engine stopped (%s); restarting from the last checkpoint in "
                                "%.0f s", self.last_error, wait, exc_info=err)
                else:
                    log.warning("slot %d stopped (%s); restarting from its last checkpoint in "
                                "%.0f s", slot, self.last_error, wait, exc_info=err)
                backoff = min(wait * 2, 30.0)
            finally:
                if slot is not None:
                    self.leading.discard(slot)
            interrupted = (self._stopping.wait() if slot is None
                           else _first(self._stopping.wait(), lost.wait()))
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(interrupted, wait)

    async def _lead(self, slot: int | None = None) -> None:
        settings = self.settings
        options = settings.kafka_client_options()
        engine_id = f"{settings.app_id}-engine"
        if slot is not None:
            engine_id = f"{engine_id}-{slot}"
        self.lease.idle.clear()
        try:
            async with AsyncExitStack() as stack:
                producer = AIOKafkaProducer(
                    bootstrap_servers=settings.bootstrap_servers,
                    transactional_id=engine_id,
                    enable_idempotence=True,
                    max_request_size=16 * 1024 * 1024,
                    # A checkpoint of 1,000 busy services is ~8 MB of state entries: with the
                    # default 16 KB batches its commit took ~0.7 s longer (docs/performance.md).
                    max_batch_size=1024 * 1024,
                    **options,
                )
                await producer.start()  # InitProducerId: fences the previous leader
                stack.push_async_callback(producer.stop)
                # Outputs between two checkpoints (streams/lead.py): fenced the same way,
                # before the restore reads what the previous leader's committed.
                outputs = AIOKafkaProducer(
                    bootstrap_servers=settings.bootstrap_servers,
                    transactional_id=f"{engine_id}-outputs",
                    enable_idempotence=True,
                    linger_ms=0,
                    max_request_size=16 * 1024 * 1024,
                    **options,
                )
                await outputs.start()
                stack.push_async_callback(outputs.stop)
                started = time.monotonic()
                restored = await self._restore(slot)
                log.info("restored %d services from the changelog%s in %.2f s",
                         len(restored.state.services),
                         "" if slot is None else f" (slot {slot})", time.monotonic() - started)
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
                if slot is not None:
                    link = await self._link(stack, slot)
                    run = Lead(self, producer, outputs, consumer, probe, restored,
                               pipeline=self.pipelines[slot], link=link)
                    await run.start()
                    self.last_error = None
                    self.leading.add(slot)
                    self._set_role("leader")
                    await run.loop(self._stopping, self.lease.lost)
                    return
                run = Lead(self, producer, outputs, consumer, probe, restored)
                await run.start()
                self.last_error = None
                while True:
                    self._set_role("leader")
                    await run.loop(self._stopping, self.lease.lost)
                    if self._stopping.is_set() or not await self._regained(probe):
                        return
        finally:
            if slot is None:
                self.lease.idle.set()

    async def _link(self, stack: AsyncExitStack, slot: int) -> SlotLink:
        """The fleet pump's clients of a slot lead: a report producer, a fleet topic reader."""
        settings = self.settings
        options = settings.kafka_client_options()
        reports = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers,
                                   enable_idempotence=True, linger_ms=0, **options)
        await reports.start()
        stack.push_async_callback(reports.stop)
        fleet = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap_servers, group_id=None,
                                 enable_auto_commit=False, isolation_level="read_committed",
                                 fetch_max_wait_ms=50, **options)
        await fleet.start()
        stack.push_async_callback(fleet.stop)
        return SlotLink(slot, settings.scale_out_slots, reports, fleet, settings.fleet_topic,
                        self.state_secrets)

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

    async def _restore(self, slot: int | None = None) -> Restored:
        """Read the state changelog (partition ``slot``, or 0) to its end (committed entries
        only) and rebuild."""
        settings = self.settings
        consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.bootstrap_servers, group_id=None,
            enable_auto_commit=False, isolation_level="read_committed",
            max_partition_fetch_bytes=32 * 1024 * 1024,
            **settings.kafka_client_options(),
        )
        await consumer.start()
        try:
            tp = TopicPartition(settings.state_topic, slot or 0)
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
            # Seconds for thousands of services: in a thread, so that the event loop goes on
            # (the lease's heartbeats: a member silent for the session timeout is dropped, and
            # the rebalance that follows restarts every slot's lead, restore included).
            restored = await asyncio.to_thread(restore, entries, self.state_secrets)
        except StateRefused:
            self.metrics.state_refused.labels(reason="inconsistent").inc()
            raise
        for refusal in restored.refused:
            self.metrics.state_refused.labels(reason=refusal.kind).inc()
            log.error("%s; the record was not used and is replaced by the next checkpoint",
                      refusal, extra={"offset": refusal.offset, "error": refusal.reason})
        pipeline = Pipeline(self.policy, approvers=self.approvers,
                            signing_key=self.signing_key, state=restored.state,
                            max_clock_skew_seconds=settings.max_clock_skew_seconds)
        if slot is None:
            self.pipeline = pipeline
        else:
            self.pipelines[slot] = pipeline
        return restored


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
