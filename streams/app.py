"""The faust application: topics, agents and web pages wired to the decision core. No logic.

``create_app(settings, policy)`` builds a faust app whose id (consumer group, changelog names)
is ``settings.app_id`` and whose topics carry ``settings.topic_prefix``, so that several
environments or test runs share one cluster without seeing each other (DESIGN §2).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import faust
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from models.policy import Policy
from streams.approvers import ApproverDirectory, load_approvers
from streams.logs import logging_config
from streams.metrics import WorkerMetrics
from streams.ordering import EventTimeMerger
from streams.pipeline import Pipeline
from streams.serde import decode, encode
from streams.settings import Settings

__all__ = ["create_app", "run_worker"]

log = logging.getLogger("rollguard.worker")


def _credentials(settings: Settings) -> Any:
    if settings.sasl_mechanism:
        password = settings.sasl_password.get_secret_value() if settings.sasl_password else ""
        return faust.SASLCredentials(
            username=settings.sasl_username or "",
            password=password,
            mechanism=settings.sasl_mechanism,
            ssl_context=settings.kafka_client_options().get("ssl_context"),
        )
    if settings.security_protocol == "SSL":
        return faust.SSLCredentials(settings.kafka_client_options()["ssl_context"])
    return None


def create_app(
    settings: Settings,
    policy: Policy,
    *,
    registry: CollectorRegistry | None = None,
    approvers: ApproverDirectory | None = None,
    signing_key: Any = None,
) -> faust.App:
    """A faust app running rollguard with ``settings`` and ``policy``."""
    registry = registry if registry is not None else CollectorRegistry()
    app = faust.App(
        settings.app_id,
        broker=[f"kafka://{server}" for server in settings.bootstrap_servers.split(",")],
        broker_credentials=_credentials(settings),
        store="memory://",
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        topic_allow_declare=True,
        web_enabled=settings.web_port != 0,
        web_host=settings.web_host,
        web_port=settings.web_port or 6066,
        web_in_thread=False,
        producer_max_request_size=max(1048576, settings.max_message_bytes * 4),
        consumer_max_fetch_size=max(1048576, settings.max_message_bytes * 4),
        key_serializer="raw",
        value_serializer="raw",
    )
    metrics = WorkerMetrics(registry)
    pipeline = Pipeline(policy, approvers=approvers, signing_key=signing_key)
    topic_types = {settings.topic_prefix + name: kind for name, kind in
                   settings.topics.inputs().items()}
    inputs = app.topic(
        *topic_types,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        allow_empty=True,
    )
    outputs = {
        kind: app.topic(settings.topic(name), key_type=bytes, value_type=bytes,
                        key_serializer="raw", value_serializer="raw")
        for kind, name in [
            ("dead_letter", "dead_letters"),
            ("decision", "decisions"),
            ("rollback_command", "commands"),
            ("approval_request", "approvals"),
            ("release_verdict", "verdicts"),
        ]
    }

    async def publish(record: Any, key: bytes | None) -> None:
        await outputs[record.type].send(key=key, value=encode(record))
        metrics.published(record)

    merger = EventTimeMerger()
    clock = _IdleClock(settings.idle_advance_seconds)
    read_up_to: dict[Any, int] = {}

    primed: list[bool] = [False]
    """Set once a tick has registered every assigned input partition with the merger: until
    then the merger does not know which partitions exist and must release nothing."""

    async def feed_released() -> None:
        if not primed[0]:
            return
        for record, raw in merger.release(time.monotonic()):
            for output in pipeline.process(record, raw):
                await publish(output, output.service.encode())

    @app.agent(inputs, name="ingest")
    async def ingest(stream: Any) -> None:
        """Decode every input message; dead-letter what fails; merge the rest in event time."""
        async for event in stream.events():
            message = event.message
            tp = message.tp
            if message.offset <= read_up_to.get(tp, -1):
                # Redelivered after a rebalance or a reconnect: the core has it already.
                metrics.redelivered(message.topic)
                continue
            decoded = decode(
                message.value,
                key=message.key,
                topic=message.topic,
                partition=message.partition,
                offset=message.offset,
                expected_type=topic_types.get(message.topic),
                reference_time=time.time(),
                max_clock_skew_seconds=settings.max_clock_skew_seconds,
                max_message_bytes=settings.max_message_bytes,
            )
            read_up_to[tp] = message.offset
            clock.arrived(time.monotonic())
            if decoded.dead_letter is not None:
                metrics.dead_letter(message.topic)
                log.warning(
                    "dead letter %s[%s]@%s: %s",
                    message.topic, message.partition, message.offset, decoded.dead_letter.error,
                    extra={"topic": message.topic, "partition": message.partition,
                           "offset": message.offset, "error": decoded.dead_letter.error},
                )
                await publish(decoded.dead_letter, message.key)
            else:
                record = decoded.record
                assert record is not None
                metrics.event_in(record.type)
                merger.add(tp, record.ts, (record, message.value), time.monotonic())
                clock.seen(record.ts)
            highwater = app.consumer.highwater(tp)
            if highwater is not None and highwater >= 0:
                merger.set_lag(tp, max(0, highwater - message.offset - 1))
            await feed_released()

    @app.timer(0.25)
    async def watermark_tick() -> None:
        """Refresh the lag of quiet partitions, release what is due, let idle time pass."""
        assigned = [tp for tp in app.consumer.assignment() if tp.topic in topic_types]
        if not assigned:
            return
        now = time.monotonic()  # before asking: what arrived before now is covered by the answer
        highwaters = await app.consumer.highwaters(*assigned)
        for tp in assigned:
            # Only what the agent has been handed counts as read: faust's fetcher runs ahead
            # of the agent, so the consumer's fetch position would call a partition caught up
            # while its next message (a deploy, say) still waits in faust's buffer.
            highwater = highwaters.get(tp)
            last = read_up_to.get(tp)
            if highwater is None:
                lag = None
            elif last is not None:
                lag = max(0, highwater - last - 1)
            else:
                lag = 0 if highwater == 0 else None  # unknown start: hold for the grace period
            merger.set_lag(tp, lag, now, confirmed=True)
            if lag is not None:
                metrics.lag(tp.topic, tp.partition, lag)
        primed[0] = True
        await feed_released()
        metrics.progress(len(merger), pipeline.state.fleet.clock)
        if len(merger) == 0 and merger.watermark(now) == float("inf"):
            target = clock.idle_target(now, time.time())
            if target is not None:
                for output in pipeline.advance(target):
                    await publish(output, output.service.encode())

    # faust's own Prometheus sensor costs ~29 µs per event (docs/performance.md); rollguard's
    # registry has what an on-call engineer pages on, consumer lag included.
    @app.page("/metrics")
    async def prometheus(web: Any, request: Any) -> Any:
        return web.bytes(generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    @app.page("/health")
    async def health(web: Any, request: Any) -> Any:
        return web.json({"status": "ok", "app_id": settings.app_id,
                         "events": pipeline.counts_by_type()})

    @app.page("/counts")
    async def counts(web: Any, request: Any) -> Any:
        return web.json(pipeline.counts_by_service())

    return app


class _IdleClock:
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
        self.newest_event = max(self.newest_event, ts)

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


def run_worker(settings: Settings, policy: Policy) -> None:
    """Run the worker in the foreground until SIGTERM/SIGINT (graceful shutdown)."""
    signing_key = None
    if settings.signing_key is not None:
        from streams.signing import load_private_key

        signing_key = load_private_key(settings.signing_key)
    app = create_app(settings, policy, approvers=load_approvers(settings.approvers),
                     signing_key=signing_key)
    worker = faust.Worker(
        app,
        loglevel=settings.log_level.lower(),
        logging_config=logging_config(settings.log_level, settings.log_format),
    )
    worker.execute_from_commandline()
