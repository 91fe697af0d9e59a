"""Prometheus metrics of the worker (served on /metrics next to faust's own)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["MAX_UNMAPPED_NAMES", "WorkerMetrics"]

MAX_UNMAPPED_NAMES = 1000
"""Unmapped OTLP metric names remembered (and logged once each); the counter has no label."""


class WorkerMetrics:
    """Counters the on-call engineer pages on: input by type, dead letters, decisions."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.events_in = Counter(
            "rollguard_events_in_total", "Valid input events by type", ["type"],
            registry=registry,
        )
        self.events_processed = Counter(
            "rollguard_events_processed_total",
            "Input events handed to the decision core (after the event-time merge)",
            registry=registry,
        )
        self.dead_letters = Counter(
            "rollguard_dead_letters_total", "Input messages sent to the dead-letter topic",
            ["topic"], registry=registry,
        )
        self.records_out = Counter(
            "rollguard_records_out_total", "Records published, by type", ["type"],
            registry=registry,
        )
        self.redeliveries = Counter(
            "rollguard_redelivered_total", "Input messages skipped as already consumed",
            ["topic"], registry=registry,
        )
        self.decisions = Counter(
            "rollguard_decisions_total", "Decisions by action", ["action"], registry=registry,
        )

        self.consumer_lag = Gauge(
            "rollguard_consumer_lag", "Input messages not yet read, by topic and partition",
            ["topic", "partition"], registry=registry,
        )
        self.buffered = Gauge(
            "rollguard_events_buffered", "Events read but waiting for the event-time watermark",
            registry=registry,
        )
        self.event_time = Gauge(
            "rollguard_event_time_seconds", "Newest event time the decision core has seen",
            registry=registry,
        )

        self.window_close_lag = Histogram(
            "rollguard_window_close_lag_seconds",
            "Wall time from the earliest moment a window may close (end + allowed lateness) "
            "to the moment the watermark closed it",
            buckets=(0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 3600, float("inf")),
            registry=registry,
        )
        self.fleet_waits = Histogram(
            "rollguard_fleet_barrier_wait_seconds",
            "Worker mode: wall time a slot's rulings waited at the fleet barrier for the other "
            "slots' reports (only rulings with a trigger wait)",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, float("inf")),
            registry=registry,
        )
        self.checkpoint_seconds = Histogram(
            "rollguard_checkpoint_seconds",
            "Checkpoints: wall time from taking the state to the committed transaction (the "
            "loop reads and decides on while the transaction is sent)",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, float("inf")),
            registry=registry,
        )
        self.checkpoint_encode_seconds = Histogram(
            "rollguard_checkpoint_encode_seconds",
            "Checkpoints: time taking the state (encoding the changed services), during which "
            "the loop waits",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5,
                     float("inf")),
            registry=registry,
        )
        self.checkpoints = Counter(
            "rollguard_checkpoints_total", "Checkpoints committed (state + outputs + positions)",
            registry=registry,
        )
        self.output_commit_seconds = Histogram(
            "rollguard_output_commit_seconds",
            "Output transactions (outputs published between two checkpoints): wall time from "
            "taking the outputs to the committed transaction",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, float("inf")),
            registry=registry,
        )
        self.outputs_rederived = Counter(
            "rollguard_outputs_rederived_total",
            "Outputs derived again after a restore that an output transaction had already "
            "published: dropped, not published twice",
            registry=registry,
        )
        self.restarts = Counter(
            "rollguard_engine_restarts_total",
            "Times the engine restarted from its last checkpoint after an error",
            registry=registry,
        )
        self.state_refused = Counter(
            "rollguard_state_records_refused_total",
            "State changelog records refused on restore (not authentic, unknown or retired "
            "format, undecodable), never executed",
            ["reason"], registry=registry,
        )
        self.otlp_unmapped = Counter(
            "rollguard_otlp_unmapped_points_total",
            "OTLP data points skipped because no ingest.otlp rule names their metric (the "
            "worker logs each such metric name once)", registry=registry,
        )
        self._unmapped_names: set[str] = set()
        self.leader = Gauge(
            "rollguard_leader", "1 while this worker runs the decision core", registry=registry,
        )

    def lag(self, topic: str, partition: int, lag: int) -> None:
        self.consumer_lag.labels(topic=topic, partition=str(partition)).set(lag)

    def progress(self, buffered: int, event_time: float) -> None:
        self.buffered.set(buffered)
        self.event_time.set(event_time)

    def dead_letter(self, topic: str) -> None:
        self.dead_letters.labels(topic=topic).inc()

    def redelivered(self, topic: str) -> None:
        self.redeliveries.labels(topic=topic).inc()

    def unmapped(self, points: dict[str, int]) -> list[str]:
        """Count skipped OTLP points; the metric names not seen before (at most
        ``MAX_UNMAPPED_NAMES`` over the worker's life, to be logged once each)."""
        self.otlp_unmapped.inc(sum(points.values()))
        new = [name for name in points if name not in self._unmapped_names]
        new = new[:max(0, MAX_UNMAPPED_NAMES - len(self._unmapped_names))]
        self._unmapped_names.update(new)
        return new

    def published(self, record: Any) -> None:
        self.records_out.labels(type=record.type).inc()
        if record.type == "decision":
            self.decisions.labels(action=record.action).inc()
