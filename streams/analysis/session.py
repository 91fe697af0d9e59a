"""One replay run over a stream of replay lines — from a file or a Kafka range — and what it keeps.

The lines go through ``streams.replay.replay_lines`` (the very core and the very bytes of file
replay). A Kafka range may also carry records that failed to decode before they became lines;
``replay_items`` emits those dead letters in stream order, between the outputs of the lines
around them. A run keeps its decisions (JSON form) for scoring, and, when a report is wanted,
taps the records the core sees into a ``TimelineCollector``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

from rollguard.models.events import CoreOutput, DeadLetter
from rollguard.models.policy import Policy
from rollguard.streams.analysis.timeline import TimelineCollector
from rollguard.streams.collector import collector_for_state
from rollguard.streams.pipeline import Pipeline
from rollguard.streams.replay import ReplayStats, replay_lines
from rollguard.streams.serde import InputRecord, encode, record_to_dict

__all__ = ["RunResult", "Item", "replay_items", "run_replay"]

Item = bytes | DeadLetter
"""A replay line, or a record that was refused before it could become one."""


class _TappedPipeline(Pipeline):
    """The replay pipeline, showing every record it processes to ``tap`` first."""

    def __init__(self, policy: Policy, tap: Callable[[Any], None], **options: Any) -> None:
        super().__init__(policy, **options)
        self._tap = tap

    def process(self, record: InputRecord, raw: bytes = b"") -> list[CoreOutput]:
        self._tap(record)
        return super().process(record, raw)


def replay_items(items: Iterable[Item], policy: Policy, *, stats: ReplayStats | None = None,
                 **options: Any) -> Iterator[Any]:
    """``replay_lines`` over the lines of ``items``, with its dead letters in stream order."""
    stats = stats if stats is not None else ReplayStats()
    pending: list[DeadLetter] = []

    def lines() -> Iterator[bytes]:
        for item in items:
            if isinstance(item, DeadLetter):
                stats.dead_letters += 1
                pending.append(item)
            else:
                yield item

    for output in replay_lines(lines(), policy, stats=stats, **options):
        if pending:
            yield from pending
            pending.clear()
        yield output
    yield from pending


@dataclass
class RunResult:
    """What one run produced and kept."""

    stats: ReplayStats
    decisions: list[dict[str, Any]] = field(default_factory=list)
    timeline: TimelineCollector | None = None


def run_replay(
    items: Iterable[Item],
    policy: Policy,
    *,
    sink: IO[bytes] | None = None,
    collect_timeline: bool = False,
    signing_key: Any = None,
    approvers: Any = None,
    **options: Any,
) -> RunResult:
    """Replay ``items``; write every output line to ``sink`` (if any); keep the decisions."""
    result = RunResult(ReplayStats())
    pipeline: Pipeline
    skew = options.get("max_clock_skew_seconds", 300.0)
    if collect_timeline:
        result.timeline = TimelineCollector(policy)
        pipeline = _TappedPipeline(policy, result.timeline.add, approvers=approvers,
                                   signing_key=signing_key, max_clock_skew_seconds=skew)
    else:
        pipeline = Pipeline(policy, approvers=approvers, signing_key=signing_key,
                            max_clock_skew_seconds=skew)
    with collector_for_state():  # as the worker's lead runs the core (streams/collector.py)
        for output in replay_items(items, policy, stats=result.stats, pipeline=pipeline,
                                   **options):
            if sink is not None:
                sink.write(encode(output) + b"\n")
            if output.type == "decision":
                result.decisions.append(record_to_dict(output))
    return result
