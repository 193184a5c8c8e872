"""One row per stage run: planned / done / failed / retryable, wall time and cost.

The same rows make the pipeline's `pipeline-stages` artifact (one per stage of that pipeline
run) and the HTML report's stage table (the latest run of each stage on the store); the
figures are those of `toucan status` for the run (toucan/status.py).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from toucan.records import Run
from toucan.status import RunStatus, read_run_status
from toucan.store import Store


class StageRow(BaseModel):
    model_config = ConfigDict(extra="forbid")

    stage: str
    run_id: str | None = None
    status: str | None = None  # the run's status (completed, failed, running, ...)
    planned: int | None = None
    done: int | None = None
    failed: int | None = None
    retryable: int | None = None  # of the failed, those the next run tries again (None: unknown)
    wall_s: float | None = None
    cost_usd: float | None = None  # of the run's model calls (None: it made none)


def retryable_errors(summary: dict[str, Any]) -> int | None:
    """The retryable error rows a run's summary counts (its `outcome`), None when it has none."""
    outcome = summary.get("outcome")
    errors = outcome.get("errors") if isinstance(outcome, dict) else None
    retryable = errors.get("retryable") if isinstance(errors, dict) else None
    return retryable if isinstance(retryable, int) else None


def stage_row(status: RunStatus) -> StageRow:
    """The row of one run, from its status."""
    progress = status.progress
    return StageRow(
        stage=status.stage,
        run_id=status.run_id,
        status=status.status,
        planned=progress.planned,
        done=progress.done,
        failed=progress.failed,
        retryable=retryable_errors(status.summary),
        wall_s=round(status.elapsed_s, 1),
        cost_usd=round(sum(m.cost_usd for m in status.models), 6) if status.models else None,
    )


def latest_stage_rows(store: Store) -> list[StageRow]:
    """The latest run of each stage on the store, in the order the stages first ran."""
    latest: dict[str, Run] = {}
    for run in sorted(store.select(Run), key=lambda r: r.started_at):
        latest.setdefault(run.stage, run)
        latest[run.stage] = run
    rows = []
    for run in latest.values():
        status = read_run_status(store, run.run_id)
        if status is not None:
            rows.append(stage_row(status))
    return rows
