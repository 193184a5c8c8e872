"""Extension 1: pair kept tasks with servers that cannot solve them (new `irrelevant` Task
rows); the trajectories stage then runs them like any task. Re-running adds nothing: the pair
ids are deterministic in (seed, task)."""

from __future__ import annotations

from typing import Any

from prefect import flow
from pydantic import BaseModel, Field

from flows.queries import select_kept_original_tasks, unfinished_ids
from flows.run_context import RunContext
from flows.runner import FanOutEnv, StageJob, StagePlan, StageTally, run_stage_flow
from tasks.irrelevance import STAGE, irrelevant_task_id, pair_tasks_batch
from toucan.config import Settings
from toucan.records import Server, Task

BATCH_TASKS = 500


class IrrelevanceSummary(BaseModel):
    run_id: str
    kept_tasks: int = 0
    already_done: int = 0
    created: int = 0
    by_status: dict[str, int] = Field(default_factory=dict)
    by_reason: dict[str, int] = Field(default_factory=dict)


class IrrelevanceJob(StageJob[list[Task]]):
    """Pairs each kept original task without its irrelevant row; no model is needed."""

    name = STAGE
    batch_fn = pair_tasks_batch

    def __init__(self, settings: Settings, *, seed: int | None = None) -> None:
        self.seed = settings.synthesize.seed if seed is None else seed
        self.per_task = settings.extensions.irrelevance_per_task
        super().__init__(settings, {"seed": self.seed, "per_task": self.per_task})

    def plan(self, ctx: RunContext) -> StagePlan[list[Task]]:
        kept = select_kept_original_tasks(ctx.store)
        todo_ids = unfinished_ids(ctx.store, Task, [irrelevant_task_id(t.task_id, 0) for t in kept])
        todo = [t for t in kept if irrelevant_task_id(t.task_id, 0) in todo_ids]
        batches = [todo[i : i + BATCH_TASKS] for i in range(0, len(todo), BATCH_TASKS)]
        return StagePlan(len(todo), len(kept) - len(todo), batches)

    def batch_kwargs(self, ctx: RunContext, plan: StagePlan[Any], env: FanOutEnv) -> dict:
        servers = {s.server_id: s for s in ctx.store.select(Server)}
        return {
            "servers": servers,
            "per_task": self.per_task,
            "seed": self.seed,
            "run_id": ctx.run_id,
        }

    def write(self, ctx: RunContext, output: list[Task], tally: StageTally) -> None:
        tally.add("created", "", ctx.store.insert(output))
        for row in output:
            tally.item(row.status, row.reason)
            ctx.events.record(
                item_id=row.task_id,
                server=",".join(row.server_ids) or None,
                status=row.status,
                error_class=row.reason,
            )
        ctx.flush_events()

    def summarise(self, ctx: RunContext, plan: StagePlan[Any], tally: StageTally) -> BaseModel:
        return IrrelevanceSummary(
            run_id=ctx.run_id,
            kept_tasks=plan.planned + plan.already_done,
            already_done=plan.already_done,
            created=tally.total("created"),
            by_status=tally.counts("status"),
            by_reason=tally.counts("reason"),
        )


@flow(name="irrelevance", log_prints=False, persist_result=False, validate_parameters=False)
def irrelevance_flow(
    store: str | None = None,
    config: str | None = None,
    profile: str | None = None,
    seed: int | None = None,
) -> IrrelevanceSummary:
    """Pair kept tasks with servers that cannot solve them; a re-run adds nothing new."""
    return run_stage_flow(IrrelevanceJob, store=store, config=config, profile=profile, seed=seed)
