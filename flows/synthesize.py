"""Stage 2: plan task slots from the seed, synthesize the unfinished ones, drop near-duplicates
(keep one of each pair), summarise."""

from __future__ import annotations

from collections.abc import Iterator
from functools import cached_property
from typing import Any

from pydantic import BaseModel, Field

from flows.dedup import dedup_pending_tasks
from flows.queries import load_server_views, stream_unfinished
from flows.runner import RunContext, StageJob, StagePlan, StageSummary, llm_lane, plan_llm_batches
from tasks.llm_batch import BatchOutput
from tasks.sampling import PlanRequest, TaskSlot, iter_slots
from tasks.synthesize import STAGE, synthesize_batch
from toucan.config import Settings
from toucan.records import Task
from toucan.store import among


class SynthesizeSummary(StageSummary):
    planned: int = Field(0, description="slots in the plan, done before or now")
    already_done: int = 0
    attempted: int = 0
    by_status: dict[str, int] = Field(default_factory=dict)
    by_reason: dict[str, int] = Field(default_factory=dict)
    by_strategy: dict[str, int] = Field(default_factory=dict)  # ok tasks
    by_generator: dict[str, int] = Field(default_factory=dict)  # ok tasks
    near_duplicates: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0


def plan_request(
    settings: Settings,
    strategies: list[str] | None,
    per_server: int | None,
    limit: int | None,
    seed: int | None,
) -> PlanRequest:
    config = settings.synthesize
    chosen_limit = limit if limit is not None else (None if per_server else config.limit)
    return PlanRequest(
        strategies=strategies or config.strategies,  # type: ignore[arg-type]
        per_server=per_server or config.per_server,
        limit=chosen_limit,
        seed=config.seed if seed is None else seed,
        sampling=config.sampling,
        max_tools=config.max_tools,
        allocations=config.multi_server_allocation,  # type: ignore[arg-type]
        featured_servers=config.featured_servers,
    )


def drop_near_duplicates(ctx: RunContext) -> dict[str, str]:
    """Keep-one dedup of the ok tasks new since the last pass (`flows.dedup`). Idempotent."""
    return dedup_pending_tasks(ctx.store, ctx.settings.synthesize.dedup_threshold)


def count_ok_task(ctx: RunContext, strategy: str, generator: str, amount: int = 1) -> None:
    ctx.tally.add("by_strategy", strategy, amount)
    ctx.tally.add("by_generator", generator, amount)


class SynthesizeJob(StageJob[list[TaskSlot]]):
    """Synthesizes the planned slots that have no finished task, then drops near-duplicates."""

    name = STAGE
    batch_fn = synthesize_batch
    needs_model = item_progress = True

    @cached_property
    def request(self) -> PlanRequest:
        """The whole plan request, defaults resolved: what makes a plan reproducible."""
        p = self.params
        return plan_request(self.settings, p.strategies, p.per_server, p.limit, p.seed)

    def run_params(self) -> dict[str, Any]:
        return self.request.model_dump(mode="json")

    def plan(self, ctx: RunContext) -> StagePlan[list[TaskSlot]]:
        """The plan's unfinished slots, streamed (a plan may have millions): their ids are
        checked against the store now, the slots made again as batches start."""
        views = load_server_views(ctx.store)
        generators, request = self.settings.models.generators, self.request
        tries = self.settings.retries.max_attempts

        def slots() -> Iterator[TaskSlot]:
            return iter_slots(views, generators, request)

        todo, already = stream_unfinished(ctx.store, Task, slots, lambda s: s.task_id, tries)
        self.views = {v.server_id: v for v in views}
        concurrency = min(self.settings.synthesize.concurrency, self.settings.max_in_flight)
        return plan_llm_batches(todo, concurrency, already)

    def batch_kwargs(self, ctx: RunContext) -> dict[str, Any]:
        return {"lane": llm_lane(ctx), "views": self.views}

    def write(self, ctx: RunContext, output: BatchOutput) -> None:
        super().write(ctx, output)
        for task_row in output.records:
            if task_row.status == "ok":
                count_ok_task(ctx, task_row.strategy, task_row.generator)
            if not task_row.cached:
                ctx.tally.add("tokens_in", "", task_row.usage.prompt_tokens)
                ctx.tally.add("tokens_out", "", task_row.usage.completion_tokens)
            ctx.tally.add("cost_usd", "", task_row.cost_usd)

    def summarise(self, ctx: RunContext) -> BaseModel:
        dropped, tally = drop_near_duplicates(ctx), ctx.tally
        # this run's tasks among the dropped ones count as rejected near-duplicates
        sql = f"SELECT strategy, generator FROM tasks WHERE run_id = ? AND {among('task_id')}"
        mine = ctx.store.query(sql, [ctx.run_id, sorted(dropped)]) if dropped else []
        for strategy, generator in mine:
            count_ok_task(ctx, strategy, generator, -1)
            tally.add("status", "ok", -1)
            tally.add("status", "rejected")
            tally.add("reason", "near_duplicate")
        return SynthesizeSummary.of(
            ctx,
            planned=ctx.plan.planned + ctx.plan.already_done,
            attempted=tally.finished,
            by_status=positive(tally.counts("status")),
            by_strategy=positive(tally.counts("by_strategy")),
            by_generator=positive(tally.counts("by_generator")),
            near_duplicates=len(dropped),
            tokens_in=tally.total("tokens_in"),
            tokens_out=tally.total("tokens_out"),
            cost_usd=round(tally.total("cost_usd"), 6),
        )


def positive(counts: dict[str, int]) -> dict[str, int]:
    """Counts left above zero (a near-duplicate takes one back from `ok`)."""
    return {key: count for key, count in counts.items() if count > 0}
