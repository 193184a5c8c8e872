"""Extension 2: rewrite kept original tasks into persona and constraint variants. The variants
then go through `filter-tasks` and `trajectories` like any task."""

from __future__ import annotations

from typing import Any

from prefect import flow
from pydantic import BaseModel, Field

from flows.queries import select_kept_original_tasks, unfinished_ids
from flows.run_context import RunContext
from flows.runner import (
    FanOutEnv,
    StageJob,
    StagePlan,
    StageTally,
    llm_lane,
    plan_llm_batches,
    run_stage_flow,
)
from tasks.diversify import (
    STAGE,
    DiversifyUnit,
    diversify_batch,
    load_personas,
    plan_units,
    variant_id,
)
from tasks.llm_batch import BatchOutput
from toucan.config import Settings
from toucan.records import Task, Tool


class DiversifySummary(BaseModel):
    run_id: str
    kept_tasks: int = 0
    units: int = 0
    already_done: int = 0
    variants_written: int = 0
    by_mode: dict[str, int] = Field(default_factory=dict)  # ok variants
    by_status: dict[str, int] = Field(default_factory=dict)
    by_reason: dict[str, int] = Field(default_factory=dict)


class DiversifyJob(StageJob[list[DiversifyUnit]]):
    """One generator call per (kept task, mode) that has no variant yet."""

    name = STAGE
    batch_fn = diversify_batch
    needs_model = True
    item_progress = True

    def __init__(
        self, settings: Settings, *, variants: int | None = None, seed: int | None = None
    ) -> None:
        super().__init__(settings, {"variants": variants, "seed": seed})
        self.variants = variants or settings.extensions.diversify_variants
        self.seed = settings.synthesize.seed if seed is None else seed
        self.kept_tasks = 0

    def plan(self, ctx: RunContext) -> StagePlan[list[DiversifyUnit]]:
        kept = select_kept_original_tasks(ctx.store)
        descriptions = {
            f"{t.server_id}/{t.name}": t.description for t in ctx.store.select(Tool, "current")
        }
        personas = load_personas(self.settings.extensions.personas_file)
        units = plan_units(kept, self.variants, personas, self.seed, descriptions)
        todo_ids = unfinished_ids(
            ctx.store, Task, [variant_id(u.task.task_id, u.mode, 0) for u in units]
        )
        todo = [u for u in units if variant_id(u.task.task_id, u.mode, 0) in todo_ids]
        self.kept_tasks = len(kept)
        concurrency = min(self.settings.synthesize.concurrency, self.settings.max_in_flight)
        return plan_llm_batches(todo, concurrency, len(units) - len(todo))

    def batch_kwargs(self, ctx: RunContext, plan: StagePlan[Any], env: FanOutEnv) -> dict:
        return {"lane": llm_lane(ctx, plan, env)}

    def write(self, ctx: RunContext, output: BatchOutput, tally: StageTally) -> None:
        super().write(ctx, output, tally)
        for row in output.records:
            if row.status == "ok":
                tally.add("by_mode", row.metadata.get("mode"))

    def summarise(self, ctx: RunContext, plan: StagePlan[Any], tally: StageTally) -> BaseModel:
        return DiversifySummary(
            run_id=ctx.run_id,
            kept_tasks=self.kept_tasks,
            units=plan.planned + plan.already_done,
            already_done=plan.already_done,
            variants_written=tally.counts("status").get("ok", 0),
            by_mode=tally.counts("by_mode"),
            by_status=tally.counts("status"),
            by_reason=tally.counts("reason"),
        )


@flow(name="diversify", log_prints=False, persist_result=False, validate_parameters=False)
def diversify_flow(
    store: str | None = None,
    config: str | None = None,
    profile: str | None = None,
    variants: int | None = None,
    seed: int | None = None,
) -> DiversifySummary:
    """Persona and constraint variants of every kept task; a re-run finishes what is missing."""
    return run_stage_flow(
        DiversifyJob, store=store, config=config, profile=profile, variants=variants, seed=seed
    )
