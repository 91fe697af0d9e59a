"""Offline replay (DESIGN §9): JSON Lines in, the worker's outputs out, byte for byte repeatable.

Replay runs the very same decision core as the worker (``models.engine.step``), one line at a
time in file order, with event time driving every window. The clock-skew check uses the newest
event time seen so far instead of the wall clock, so the same file always decodes the same way.
At the end of the input nothing more can arrive, so event time runs on until every open bake has
ended (``Pipeline.finish``): a release whose telemetry stopped ends inconclusive, never pass.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from rollguard.models.policy import Policy
from rollguard.streams.approvers import ApproverDirectory
from rollguard.streams.pipeline import Pipeline
from rollguard.streams.serde import decode_line, encode

__all__ = ["ReplayStats", "replay_lines", "replay_to_bytes"]


@dataclass
class ReplayStats:
    """What a replay saw: lines read, events by type, dead letters, outputs by type."""

    lines: int = 0
    events: Counter[str] = field(default_factory=Counter)
    dead_letters: int = 0
    outputs: Counter[str] = field(default_factory=Counter)


def replay_lines(
    lines: Iterable[bytes],
    policy: Policy,
    *,
    signing_key: Any = None,
    approvers: ApproverDirectory | None = None,
    source: str = "",
    max_clock_skew_seconds: float = 300.0,
    max_message_bytes: int = 262144,
    pipeline: Pipeline | None = None,
    stats: ReplayStats | None = None,
    flush: bool = True,
) -> Iterator[Any]:
    """Yield every output record (and dead letter) the worker would emit for ``lines``."""
    pipeline = pipeline or Pipeline(policy, approvers=approvers, signing_key=signing_key,
                                    max_clock_skew_seconds=max_clock_skew_seconds)
    stats = stats if stats is not None else ReplayStats()
    newest: float | None = None
    refused_ahead: float | None = None
    for number, raw in enumerate(lines, start=1):
        line = raw.rstrip(b"\r\n")
        if not line.strip():
            continue
        stats.lines += 1
        decoded = decode_line(
            line,
            line_number=number,
            source=source,
            reference_time=newest,
            max_clock_skew_seconds=max_clock_skew_seconds,
            max_message_bytes=max_message_bytes,
        )
        record = decoded.record
        if decoded.dead_letter is not None:
            early = decoded.too_early
            if early is None or not _confirms_gap(early.ts, refused_ahead, max_clock_skew_seconds):
                refused_ahead = early.ts if early is not None else None
                stats.dead_letters += 1
                yield decoded.dead_letter
                continue
            record = early
        refused_ahead = None
        assert record is not None
        stats.events[record.type] += 1
        if newest is None or record.ts > newest:
            newest = record.ts
        for output in pipeline.process(record, line):
            stats.outputs[output.type] += 1
            yield output
    if flush and newest is not None:
        for output in pipeline.finish(newest):
            stats.outputs[output.type] += 1
            yield output


def _confirms_gap(ts: float, refused_ahead: float | None, skew: float) -> bool:
    """A line that follows a refused future line closely confirms a real gap in time.

    In replay the reference clock is the newest event time seen, so a quiet stretch longer
    than ``max_clock_skew_seconds`` makes the first event after it look like a producer with a
    broken clock. When the next line lands within the skew of that refused one, time really
    moved on: the reference jumps and the rest of the file is read normally (only the first
    event after the gap is dead-lettered, with its bytes kept).
    """
    return refused_ahead is not None and abs(ts - refused_ahead) <= skew


def replay_to_bytes(lines: Iterable[bytes], policy: Policy, **options: Any) -> Iterator[bytes]:
    """Like ``replay_lines`` but yields the JSON line of each output, newline-terminated."""
    for output in replay_lines(lines, policy, **options):
        yield encode(output) + b"\n"
