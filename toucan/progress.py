"""Progress reporting that does not care who listens.

Stages call `report_progress`; it goes out as a log record on the `toucan.progress` logger.
The CLI attaches a handler that drives a progress bar; Prefect artifacts can listen the same
way. Nothing here knows about terminals or Prefect.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

PROGRESS_LOGGER = logging.getLogger("toucan.progress")


@dataclass(frozen=True)
class ProgressUpdate:
    stage: str
    done: int
    total: int
    item: str | None = None
    status: str | None = None


def report_progress(
    stage: str, done: int, total: int, item: str | None = None, status: str | None = None
) -> None:
    update = ProgressUpdate(stage, done, total, item, status)
    PROGRESS_LOGGER.info("%s %d/%d %s", stage, done, total, item or "", extra={"progress": update})
