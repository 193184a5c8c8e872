"""A stage run's live progress in the store: planned / finished / failed, for `toucan status`.

Events reach the store per batch (hundreds of items), so a reader in another process would see
a short LLM stage at `done 0` until its only batch is written. `live_progress(ctx)` writes the
run's `run_progress` row right after the plan, then listens to the stage's progress updates
(`toucan.progress`, sent per item by the LLM batches, per batch by the others) and writes the
latest counts at most every LIVE_EVERY_S from a thread of its own, so the batches' event loops
never wait on the store. When the block ends the row gets the run's final counts (its tally).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from toucan.progress import ProgressUpdate, listening
from toucan.records import RunProgress, utc_now

if TYPE_CHECKING:
    from flows.run_context import RunContext

logger = logging.getLogger(__name__)

# Each write is one small upsert (a few ms); twice a second keeps `toucan status --watch` and
# a polling operator current without keeping the file busy (readers elsewhere need it idle).
LIVE_EVERY_S = 0.5


class LiveProgress(logging.Handler):
    """Counts one stage's progress updates and writes them to its `run_progress` row.

    `emit` runs on whichever thread reported (often a batch's event loop) and only records the
    numbers; a daemon thread writes them when they changed, at most every LIVE_EVERY_S."""

    def __init__(self, ctx: RunContext) -> None:
        super().__init__(level=logging.INFO)
        self.ctx = ctx
        self.finished = 0
        self.failed = 0
        self._changed = threading.Event()
        self._stop = threading.Event()
        self._writer: threading.Thread | None = None

    def emit(self, record: logging.LogRecord) -> None:
        update = getattr(record, "progress", None)
        if not isinstance(update, ProgressUpdate) or update.stage != self.ctx.run.stage:
            return
        # updates from several batches arrive out of order; counts only grow
        self.finished = max(self.finished, update.done)
        self.failed = max(self.failed, update.failed)
        self._changed.set()

    def start(self) -> None:
        self.write(self.finished, self.failed)
        self._writer = threading.Thread(
            target=self._write_periodically, name=f"live-progress:{self.ctx.run_id}", daemon=True
        )
        self._writer.start()

    def stop(self) -> None:
        """Stop the writer thread and write the run's final counts (its tally)."""
        self._stop.set()
        self._changed.set()
        if self._writer is not None:
            self._writer.join(timeout=30)
        tally = self.ctx.tally
        self.write(max(self.finished, tally.finished), max(self.failed, tally.failed))

    def _write_periodically(self) -> None:
        while True:
            self._changed.wait()
            if self._stop.is_set():
                return
            self._changed.clear()
            self.write(self.finished, self.failed)
            if self._stop.wait(LIVE_EVERY_S):
                return

    def write(self, finished: int, failed: int) -> None:
        plan = self.ctx.plan
        row = RunProgress(
            run_id=self.ctx.run_id,
            stage=self.ctx.run.stage,
            planned=plan.planned,
            already_done=plan.already_done,
            finished=finished,
            failed=failed,
            updated_at=utc_now(),
        )
        try:
            self.ctx.store.upsert([row])
        except Exception:  # a progress row must never fail the stage
            logger.warning(
                "could not write the live progress of %s", self.ctx.run_id, exc_info=True
            )


@contextmanager
def live_progress(ctx: RunContext, enabled: bool = True) -> Iterator[None]:
    """Keep the run's `run_progress` row current while the block runs (`ctx.plan` is set).
    Disabled for a stage that only reads the store (it must not write)."""
    if not enabled:
        yield
        return
    tracker = LiveProgress(ctx)
    tracker.start()
    try:
        with listening(tracker):
            yield
    finally:
        tracker.stop()
