"""Progress reporting that does not care who listens.

Stages call `report_progress`; it goes out as a log record on the `toucan.progress` logger.
The CLI attaches a handler that drives a progress bar; Prefect artifacts can listen the same
way. Nothing here knows about terminals or Prefect.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

PROGRESS_LOGGER = logging.getLogger("toucan.progress")


@dataclass(frozen=True)
class ProgressUpdate:
    stage: str
    done: int
    total: int
    item: str | None = None
    status: str | None = None
    failed: int = 0  # of `done`, the items that ended in an error row


def report_progress(
    stage: str,
    done: int,
    total: int,
    item: str | None = None,
    status: str | None = None,
    failed: int = 0,
) -> None:
    """One step of `stage`: `done` of `total` items finished so far, `failed` of them errors;
    `item` and `status` name the item that just finished (per-item reporters only)."""
    update = ProgressUpdate(stage, done, total, item, status, failed)
    PROGRESS_LOGGER.info("%s %d/%d %s", stage, done, total, item or "", extra={"progress": update})


@contextmanager
def listening(handler: logging.Handler, *, exclusive: bool = False) -> Iterator[None]:
    """Hand every update to `handler` while the block runs. The updates reach the root
    logger's handlers only if they did before and `exclusive` is off (the CLI's bars are
    exclusive: the same update must not also print as a log line); the logger's level and
    propagation are restored after."""
    level, propagate = PROGRESS_LOGGER.level, PROGRESS_LOGGER.propagate
    PROGRESS_LOGGER.addHandler(handler)
    if exclusive or not PROGRESS_LOGGER.isEnabledFor(logging.INFO):
        PROGRESS_LOGGER.setLevel(logging.INFO)
        PROGRESS_LOGGER.propagate = False
    try:
        yield
    finally:
        PROGRESS_LOGGER.removeHandler(handler)
        PROGRESS_LOGGER.setLevel(level)
        PROGRESS_LOGGER.propagate = propagate
