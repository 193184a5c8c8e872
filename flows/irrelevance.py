"""Extension 1: pair kept tasks with servers that cannot solve them (new `irrelevant` Task
rows); the trajectories stage then runs them like any task. Re-running adds nothing: the pair
ids are deterministic in (seed, task)."""

from __future__ import annotations

from functools import cached_property
from typing import Any

from pydantic import BaseModel, Field

from flows.queries import irrelevance_plan
from flows.runner import RunContext, StageJob, StagePlan, StageSummary
from tasks.irrelevance import STAGE, pair_tasks_batch
from toucan.events import joined_servers
from toucan.records import Server, Task

BATCH_TASKS = 500


class IrrelevanceSummary(StageSummary):
    kept_tasks: int = 0
    already_done: int = 0
    created: int = Field(0, description="task rows this run added")
    by_status: dict[str, int] = Field(default_factory=dict)
    by_reason: dict[str, int] = Field(default_factory=dict)


class IrrelevanceJob(StageJob[list[Task]]):
    """Pairs each kept original task without its irrelevant row; no model is needed."""

    name = STAGE
    batch_fn = pair_tasks_batch

    @cached_property
    def seed(self) -> int:
        return self.settings.synthesize.seed if self.params.seed is None else self.params.seed

    def run_params(self) -> dict[str, Any]:
        """The seed and pairs per task in force (the pair ids depend on them)."""
        return {"seed": self.seed, "per_task": self.settings.extensions.irrelevance_per_task}

    def plan(self, ctx: RunContext) -> StagePlan[list[Task]]:
        todo, already = irrelevance_plan(ctx.store, self.settings.retries.max_attempts)
        return StagePlan(len(todo), already, todo.batched(BATCH_TASKS))

    def batch_kwargs(self, ctx: RunContext) -> dict[str, Any]:
        servers = {s.server_id: s for s in ctx.store.select(Server)}
        return {
            "servers": servers,
            "per_task": self.settings.extensions.irrelevance_per_task,
            "seed": self.seed,
            "run_id": ctx.run_id,
        }

    def write(self, ctx: RunContext, output: list[Task]) -> None:
        ctx.tally.add("created", "", ctx.store.insert(output))
        for row in output:
            ctx.tally.item(row.status, row.reason)
            ctx.events.record(
                item_id=row.task_id,
                server=joined_servers(row.server_ids),
                status=row.status,
                error_class=row.reason,
            )
        ctx.flush_events()

    def summarise(self, ctx: RunContext) -> BaseModel:
        kept = ctx.plan.planned + ctx.plan.already_done
        return IrrelevanceSummary.of(ctx, kept_tasks=kept, created=ctx.tally.total("created"))
