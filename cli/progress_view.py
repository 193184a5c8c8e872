"""Progress on stderr fed by `toucan.progress` log records: a rich bar per stage on a terminal,
plain timestamped lines elsewhere (a log file or CI, where a live bar would show nothing)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from cli.app import console
from toucan.progress import ProgressUpdate, listening

LINE_EVERY_S = 15.0  # at most one line per stage this often, besides its first and last


class _BarHandler(logging.Handler):
    def __init__(self, progress: Progress) -> None:
        super().__init__(logging.INFO)
        self.progress = progress
        self.bars: dict[str, int] = {}

    def emit(self, record: logging.LogRecord) -> None:
        update: ProgressUpdate | None = getattr(record, "progress", None)
        if update is None:
            return
        if update.stage not in self.bars:
            self.bars[update.stage] = self.progress.add_task(update.stage, total=update.total)
        label = f"{update.stage} {update.item or ''} {update.status or ''}".strip()
        self.progress.update(
            self.bars[update.stage], completed=update.done, total=update.total, description=label
        )


class LineHandler(logging.Handler):
    """One line per update worth telling: a stage's first, its last, and one every
    `every_s` seconds in between, each with the seconds since the stage's first update."""

    def __init__(self, every_s: float = LINE_EVERY_S) -> None:
        super().__init__(logging.INFO)
        self.every_s = every_s
        self.started: dict[str, float] = {}
        self.last_line: dict[str, float] = {}

    def emit(self, record: logging.LogRecord) -> None:
        update: ProgressUpdate | None = getattr(record, "progress", None)
        if update is None or update.total == 0:
            return  # a stage with nothing planned has no progress to tell (its summary says so)
        now = time.monotonic()
        if update.done == 0 or update.stage not in self.started:
            self.started[update.stage] = now
            self.last_line.pop(update.stage, None)
        finished = update.done >= update.total
        due = now - self.last_line.get(update.stage, -self.every_s) >= self.every_s
        if not (finished or due):
            return
        self.last_line[update.stage] = now
        elapsed = now - self.started[update.stage]
        parts = " ".join(part for part in (update.item, update.status) if part)
        detail = f" ({parts})" if parts else ""
        console.print(
            f"  {update.stage} {update.done}/{update.total}{detail} {elapsed:.0f}s",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )


@contextmanager
def progress_bars(enabled: bool = True) -> Iterator[None]:
    """Show a bar per stage while the block runs (disabled for --json); progress lines
    instead when the console is not a terminal."""
    if not enabled:
        yield
        return
    if not console.is_terminal:
        with listening(LineHandler(), exclusive=True):
            yield
        return
    progress = Progress(
        TextColumn("{task.description:<48}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )
    with listening(_BarHandler(progress), exclusive=True), progress:
        yield
