"""Leadership: one worker of an app id runs the decision core; the others stand by.

Every worker of one app id joins the consumer group ``app_id`` on the one-partition topic
``{app_id}-leader``; the member the group assigns that partition is the leader. The sticky
assignor leaves the lease where it is when a standby joins. When the leader leaves (SIGTERM:
it writes a last checkpoint first) or dies (no heartbeat for ``session_timeout``), the group
hands the partition to a standby, which restores the last checkpoint and carries on.

With ``scale_out_slots = N > 1`` the leader topic has ``N`` partitions, one per slot, and the
group hands them out the same way: ``slots`` is the set this worker holds (docs/worker.md,
"On Kafka: slots"); a member joining or leaving moves whole slots.

A lease cannot stop a leader that has not noticed it was replaced (a long pause, a network
partition). That is the transactional producer's job: the new leader's producer, which has the
same ``transactional.id``, fences the old one, whose next commit then fails (streams/worker.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener
from aiokafka.coordinator.assignors.sticky.sticky_assignor import StickyPartitionAssignor

from rollguard.streams.settings import Settings

__all__ = ["Lease"]

log = logging.getLogger("rollguard.lease")


class Lease(ConsumerRebalanceListener):  # type: ignore[misc]
    """Membership in the leader group; ``held`` is set while this worker is the leader (holds
    at least one slot; which ones: ``slots``)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.held = asyncio.Event()
        self.lost = asyncio.Event()
        self.idle = asyncio.Event()
        """Set by the engine while it is not leading (a revocation waits for it: hand-over)."""
        self.idle.set()
        self.slots: frozenset[int] = frozenset()
        """The leader topic's partitions (slots) this worker holds."""
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def topic(self) -> str:
        return self.settings.leader_topic

    async def start(self) -> None:
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.bootstrap_servers,
            group_id=self.settings.app_id,
            enable_auto_commit=False,
            partition_assignment_strategy=(StickyPartitionAssignor,),
            session_timeout_ms=int(self.settings.session_timeout_seconds * 1000),
            heartbeat_interval_ms=max(500, int(self.settings.session_timeout_seconds * 250)),
            # A topic the group's leader does not see yet gets no assignment until metadata is
            # refreshed: keep that short (the default is five minutes).
            metadata_max_age_ms=5000,
            **self.settings.kafka_client_options(),
        )
        await self._consumer.start()
        # The worker may have created the leader topic a moment ago: wait until the broker's
        # metadata shows it, or the first assignment hands out nothing and nobody leads.
        for _ in range(100):
            if self.topic in await self._consumer.topics():
                break
            await asyncio.sleep(0.1)
        self._consumer.subscribe(topics=[self.topic], listener=self)
        self._task = asyncio.create_task(self._poll(), name="rollguard-lease")

    async def _poll(self) -> None:
        # Nothing is ever written to the leader topic; polling keeps the membership alive
        # (aiokafka leaves the group when poll is not called for max_poll_interval).
        assert self._consumer is not None
        while True:
            try:
                await self._consumer.getmany(timeout_ms=1000)
            except asyncio.CancelledError:
                raise
            except Exception as err:  # noqa: BLE001 - keep polling; the group will sort it out
                log.warning("leader group poll failed: %s", err)
                await asyncio.sleep(1.0)

    async def on_partitions_revoked(self, revoked: Any) -> None:
        leading = self.held.is_set()
        self.held.clear()
        self.slots = frozenset()
        self.lost.set()
        if leading:
            log.info("leadership revoked: writing a last checkpoint before handing over")
            try:
                await asyncio.wait_for(self.idle.wait(), self.settings.session_timeout_seconds)
            except TimeoutError:
                log.warning("engine did not stop in time; the next leader fences it")

    async def on_partitions_assigned(self, assigned: Any) -> None:
        slots = frozenset(tp.partition for tp in assigned if tp.topic == self.topic)
        if slots:
            if self.settings.scale_out_slots > 1:
                log.info("slots acquired: %s", ", ".join(map(str, sorted(slots))))
            else:
                log.info("leadership acquired")
            self.slots = slots
            self.lost.clear()
            self.held.set()

    async def stop(self) -> None:
        self.held.clear()
        self.slots = frozenset()
        self.lost.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()  # leaves the group: a standby takes over at once
