"""Extension 2: rewrite kept original tasks into persona and constraint variants. The variants
then go through `filter-tasks` and `trajectories` like any task."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from flows.queries import KEPT_ORIGINAL_TASKS, diversify_plan
from flows.runner import RunContext, StageJob, StagePlan, StageSummary, llm_lane, plan_llm_batches
from tasks.diversify import (
    STAGE,
    DiversifyUnit,
    diversify_batch,
    load_personas,
    plan_unit,
)
from tasks.llm_batch import BatchOutput
from toucan.records import Task, Tool


class DiversifySummary(StageSummary):
    kept_tasks: int = 0
    units: int = Field(0, description="(kept task, mode) pairs")
    already_done: int = 0
    variants_written: int = 0
    by_mode: dict[str, int] = Field(default_factory=dict)  # ok variants
    by_status: dict[str, int] = Field(default_factory=dict)
    by_reason: dict[str, int] = Field(default_factory=dict)


class DiversifyJob(StageJob[list[DiversifyUnit]]):
    """One generator call per (kept task, mode) that has no variant yet."""

    name = STAGE
    batch_fn = diversify_batch
    needs_model = item_progress = True

    def plan(self, ctx: RunContext) -> StagePlan[list[DiversifyUnit]]:
        settings, params = self.settings, self.params
        descriptions = {
            f"{t.server_id}/{t.name}": t.description for t in ctx.store.select(Tool, "current")
        }
        personas = load_personas(settings.extensions.personas_file)
        variants = params.variants or settings.extensions.diversify_variants
        seed = settings.synthesize.seed if params.seed is None else params.seed
        pairs, already = diversify_plan(ctx.store, settings.retries.max_attempts)
        todo = pairs.map(
            lambda pair: plan_unit(pair[0], pair[1], variants, personas, seed, descriptions)
        )
        self.kept_tasks = ctx.store.count(Task, KEPT_ORIGINAL_TASKS)
        concurrency = min(settings.synthesize.concurrency, settings.max_in_flight)
        return plan_llm_batches(todo, concurrency, already)

    def batch_kwargs(self, ctx: RunContext) -> dict[str, Any]:
        return {"lane": llm_lane(ctx)}

    def write(self, ctx: RunContext, output: BatchOutput) -> None:
        super().write(ctx, output)
        for row in output.records:
            if row.status == "ok":
                ctx.tally.add("by_mode", row.metadata.get("mode"))

    def summarise(self, ctx: RunContext) -> BaseModel:
        return DiversifySummary.of(
            ctx,
            kept_tasks=self.kept_tasks,
            units=ctx.plan.planned + ctx.plan.already_done,
            variants_written=ctx.tally.counts("status").get("ok", 0),
            by_mode=ctx.tally.counts("by_mode"),
        )
