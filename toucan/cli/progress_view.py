"""A rich progress bar on stderr fed by `toucan.progress` log records."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from toucan.cli.app import console
from toucan.progress import PROGRESS_LOGGER, ProgressUpdate


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


@contextmanager
def progress_bars(enabled: bool = True) -> Iterator[None]:
    """Show a bar per stage while the block runs (disabled for --json or non-terminals)."""
    if not enabled:
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
    handler = _BarHandler(progress)
    PROGRESS_LOGGER.addHandler(handler)
    PROGRESS_LOGGER.setLevel(logging.INFO)
    PROGRESS_LOGGER.propagate = False
    try:
        with progress:
            yield
    finally:
        PROGRESS_LOGGER.removeHandler(handler)
