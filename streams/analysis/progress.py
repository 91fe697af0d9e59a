"""A progress bar on stderr (events/s, ETA) for long replays and exports — only on a terminal.

When stderr is not a terminal (a pipe, a file, a test) nothing is drawn and nothing is
buffered: ``advance`` is a counter update.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from types import TracebackType
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

__all__ = ["ProgressReporter"]


class _EventsPerSecond(ProgressColumn):
    """Events per second over the whole run (the bar itself may count bytes)."""

    def render(self, task: Task) -> Text:
        elapsed = task.elapsed or 0.0
        events = float(task.fields.get("events", 0))
        rate = events / elapsed if elapsed > 0 else 0.0
        return Text(f"{rate:,.0f} events/s", style="progress.data.speed")


class ProgressReporter:
    """Progress of one run: ``set_total`` once known, ``advance`` per unit of work."""

    def __init__(self, description: str, *, enabled: bool | None = None,
                 console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self.enabled = self.console.is_terminal if enabled is None else enabled
        self.description = description
        self.events = 0
        self._progress: Progress | None = None
        self._task: Any = None

    def __enter__(self) -> ProgressReporter:
        if self.enabled:
            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                TaskProgressColumn(),
                _EventsPerSecond(),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=self.console,
                transient=False,
            )
            self._progress.start()
            self._task = self._progress.add_task(self.description, total=None, events=0)
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def set_total(self, total: float | None) -> None:
        """The amount of work (records, bytes) the run will do, when it becomes known."""
        if self._progress is not None:
            self._progress.update(self._task, total=total)

    def advance(self, work: float = 1.0, events: int = 1) -> None:
        """``work`` units done, covering ``events`` events."""
        self.events += events
        if self._progress is not None:
            self._progress.update(self._task, advance=work, events=self.events)

    def lines(self, lines: Iterable[bytes]) -> Iterator[bytes]:
        """Pass file lines through, advancing by their size in bytes (set_total: file size)."""
        for line in lines:
            self.advance(len(line))
            yield line
