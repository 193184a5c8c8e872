"""Extension 2 flow: rewrite kept original tasks into persona and constraint variants.

`diversify_flow` fans batches out as Prefect tasks; `run_diversify` runs the same stage on
plain asyncio. The variants then go through `filter-tasks` and `trajectories` like any task.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from prefect import flow
from pydantic import BaseModel, Field

from flows.kept import select_kept_original_tasks
from flows.llm_fanout import run_job, run_job_async, unfinished_ids, write_output
from tasks.diversify import (
    MODES,
    STAGE,
    DiversifyUnit,
    diversify_batch,
    load_personas,
    plan_units,
    variant_id,
)
from tasks.llm_batch import PARALLEL_BATCHES, BatchOutput, ProgressCounter, split_batches
from toucan.config import Settings, load_settings
from toucan.llm.cache import LlmCache
from toucan.records import Task, Tool
from toucan.runs import RunContext, stage_run
from toucan.store import Store


class DiversifySummary(BaseModel):
    run_id: str
    kept_tasks: int = 0
    units: int = 0
    already_done: int = 0
    variants_written: int = 0
    by_mode: dict[str, int] = Field(default_factory=dict)  # ok variants
    by_status: dict[str, int] = Field(default_factory=dict)
    by_reason: dict[str, int] = Field(default_factory=dict)


def count_pending(store: Store) -> int:
    """(kept task, mode) pairs with no variant row yet (the pipeline's completeness check)."""
    if not store.path.exists():
        return 0
    ids = [
        variant_id(t.task_id, mode, 0) for t in select_kept_original_tasks(store) for mode in MODES
    ]
    return len(unfinished_ids(store, Task, ids))


class DiversifyRun:
    """The steps both entry points share, around one stage_run context."""

    def __init__(self, ctx: RunContext, variants: int | None, seed: int | None) -> None:
        self.ctx = ctx
        settings = ctx.settings
        kept = select_kept_original_tasks(ctx.store)
        descriptions = {
            f"{t.server_id}/{t.name}": t.description for t in ctx.store.select(Tool, "current")
        }
        count = variants or settings.extensions.diversify_variants
        personas = load_personas(settings.extensions.personas_file)
        units = plan_units(
            kept, count, personas, settings.synthesize.seed if seed is None else seed, descriptions
        )
        todo_ids = unfinished_ids(
            ctx.store, Task, [variant_id(u.task.task_id, u.mode, 0) for u in units]
        )
        self.todo = [u for u in units if variant_id(u.task.task_id, u.mode, 0) in todo_ids]
        concurrency = min(settings.synthesize.concurrency, settings.max_in_flight)
        self.batches, self.per_batch = split_batches(self.todo, concurrency)
        self.summary = DiversifySummary(
            run_id=ctx.run_id,
            kept_tasks=len(kept),
            units=len(units),
            already_done=len(units) - len(self.todo),
        )
        self.progress = ProgressCounter(STAGE, len(self.todo))

    def batch_kwargs(self, local_base_url: str | None) -> dict[str, Any]:
        return {
            "models": self.ctx.settings.models.shared_by(min(PARALLEL_BATCHES, len(self.batches))),
            "run_id": self.ctx.run_id,
            "concurrency": self.per_batch,
            "local_base_url": local_base_url,
            "cache": LlmCache.load(self.ctx.store, self.ctx.run_id),
            "progress": self.progress,
        }

    def write(self, output: BatchOutput) -> None:
        write_output(self.ctx, output)
        rows: list[Task] = output.records
        self.summary.variants_written += sum(r.status == "ok" for r in rows)
        self.summary.by_mode = dict(
            Counter(self.summary.by_mode)
            + Counter(r.metadata.get("mode") for r in rows if r.status == "ok")
        )
        self.summary.by_status = dict(
            Counter(self.summary.by_status) + Counter(r.status for r in rows)
        )
        self.summary.by_reason = dict(
            Counter(self.summary.by_reason) + Counter(r.reason for r in rows if r.reason)
        )

    def finish(self) -> DiversifySummary:
        self.ctx.summary = self.summary.model_dump(mode="json")
        return self.summary


@flow(name="diversify", log_prints=False, persist_result=False, validate_parameters=False)
def diversify_flow(
    store: str | None = None,
    config: str | None = None,
    profile: str | None = None,
    variants: int | None = None,
    seed: int | None = None,
) -> DiversifySummary:
    """Persona and constraint variants of every kept task; a re-run finishes what is missing."""
    settings = load_settings(config, profile=profile)
    params = {"variants": variants, "seed": seed}
    with stage_run(Store(store or settings.store), settings, STAGE, params) as ctx:
        job = DiversifyRun(ctx, variants, seed)
        run_job(job, diversify_batch, settings)
        return job.finish()


async def run_diversify(
    settings: Settings, store: Store, variants: int | None = None, seed: int | None = None
) -> DiversifySummary:
    """Extension 2 without Prefect: the same units, batches and writes on plain asyncio."""
    with stage_run(store, settings, STAGE, {"variants": variants, "seed": seed}) as ctx:
        job = DiversifyRun(ctx, variants, seed)
        await run_job_async(job, diversify_batch, settings)
        return job.finish()


__all__ = ["DiversifySummary", "DiversifyUnit", "diversify_flow", "run_diversify"]
