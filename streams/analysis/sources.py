"""Where a replay's lines come from: a §9 file, or a time range of the input topics.

Both give an iterator of ``Item`` (a replay line, or for Kafka a record refused before it
became one) that ``streams.analysis.session`` replays, and advance the progress bar.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO

from rollguard.models.events import DeadLetter
from rollguard.streams.analysis.kafka_range import RangeStats, TimeRange, input_topics, read_range
from rollguard.streams.analysis.progress import ProgressReporter
from rollguard.streams.analysis.session import Item
from rollguard.streams.analysis.timerange import parse_time_arg
from rollguard.streams.settings import Settings

__all__ = ["KafkaSource", "file_items"]


def file_items(path: Path, progress: ProgressReporter) -> Iterator[bytes]:
    """The lines of a replay file; the progress bar counts bytes."""
    progress.set_total(path.stat().st_size)
    with open(path, "rb") as handle:
        yield from progress.lines(handle)


class KafkaSource:
    """A range of the input topics named on the command line (ValueError on bad arguments)."""

    def __init__(self, settings: Settings, since: str | None, until: str | None,
                 topic_names: Sequence[str] = ()) -> None:
        self.settings = settings
        self.range = TimeRange(parse_time_arg(since) if since else None,
                               parse_time_arg(until) if until else None)
        names = [n for given in topic_names for n in given.split(",") if n.strip()]
        self.topics = input_topics(settings, names)
        self.stats = RangeStats()
        self.description = (f"kafka:{settings.bootstrap_servers}/{settings.topic_prefix}*"
                            f"[{since or ''}..{until or ''}]")

    def items(self, progress: ProgressReporter | None = None,
              spool: IO[bytes] | None = None) -> Iterator[Item]:
        """The range in event-time order; each line also written to ``spool`` if given."""
        for item in read_range(self.settings, self.range, self.topics, stats=self.stats,
                               progress=progress):
            if spool is not None and not isinstance(item, DeadLetter):
                spool.write(item + b"\n")
            yield item

    def summary(self) -> dict[str, object]:
        """What was read, for ``--summary-json``."""
        return {"since": self.range.since, "until": self.range.until,
                "topics": list(self.topics), "partitions": self.stats.partitions,
                "records": dict(self.stats.records), "dead_letters": self.stats.dead_letters}
