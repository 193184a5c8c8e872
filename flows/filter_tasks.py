"""Stage 3: the judge rates every ok task that has no final rating yet; thresholds decide which
are kept."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from flows.queries import load_server_views, select_unrated_tasks
from flows.runner import RunContext, StageJob, StagePlan, StageSummary, llm_lane, plan_llm_batches
from tasks.filter_tasks import (
    DIMENSIONS,
    JUDGE_GROUP,
    STAGE,
    check_thresholds,
    filter_tasks_batch,
)
from tasks.llm_batch import BatchOutput
from toucan.records import Task, TaskRating


class FilterTasksSummary(StageSummary):
    candidates: int = Field(0, description="ok tasks, rated before or in this run")
    already_rated: int = 0
    rated: int = 0
    kept: int = 0
    rejected: int = 0
    errors: int = Field(0, description="ratings that failed; their reasons in by_reason")
    by_reason: dict[str, int] = Field(default_factory=dict)
    by_strategy: dict[str, dict[str, int]] = Field(default_factory=dict)  # kept / rejected
    by_generator: dict[str, dict[str, int]] = Field(default_factory=dict)
    mean_scores: dict[str, float] = Field(default_factory=dict)
    thresholds: dict[str, int] = Field(default_factory=dict)
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0


def outcome_of(rating: TaskRating) -> str:
    return "error" if rating.status == "error" else ("kept" if rating.keep else "rejected")


class FilterTasksJob(StageJob[list[Task]]):
    """Rates the unrated ok tasks, in lanes of judge calls."""

    name = STAGE
    batch_fn = filter_tasks_batch
    needs_model = item_progress = True

    def plan(self, ctx: RunContext) -> StagePlan[list[Task]]:
        self.thresholds = check_thresholds(self.settings.filter_tasks.thresholds)
        judges = [d.name for d in self.settings.models.group(JUDGE_GROUP)]
        tries = self.settings.retries.max_attempts
        todo, already = select_unrated_tasks(ctx.store, judges, self.params.limit, tries)
        self.labels: dict[str, tuple[str, str]] = {}  # of the batches in flight
        section = self.settings.filter_tasks
        return plan_llm_batches(
            todo, min(section.concurrency, self.settings.max_in_flight), already
        )

    def batch_kwargs(self, ctx: RunContext) -> dict[str, Any]:
        views = {v.server_id: v for v in load_server_views(ctx.store)}
        return {"lane": llm_lane(ctx), "views": views, "thresholds": self.thresholds}

    def batch_args(self, batch: list[Task]) -> dict[str, Any]:
        # the strategy and generator `write` counts each rating by, kept while its batch is
        # in flight: no write reads the rated tasks back from the store
        self.labels.update((task.task_id, (task.strategy, task.generator)) for task in batch)
        return {}

    def write(self, ctx: RunContext, output: BatchOutput) -> None:
        super().write(ctx, output)
        for rating in output.records:
            (strategy, generator), outcome = self.labels.pop(rating.task_id), outcome_of(rating)
            ctx.tally.add("outcome", outcome)
            ctx.tally.add("by_strategy", (strategy, outcome))
            ctx.tally.add("by_generator", (generator, outcome))
            for name, score in rating.scores.items() if rating.status == "ok" else ():
                ctx.tally.sample("scores", name, score.score)

    def summarise(self, ctx: RunContext) -> BaseModel:
        outcomes, tally = ctx.tally.counts("outcome"), ctx.tally
        return FilterTasksSummary.of(
            ctx,
            rated=tally.finished,
            kept=outcomes.get("kept", 0),
            rejected=outcomes.get("rejected", 0),
            errors=outcomes.get("error", 0),
            by_strategy=tally.table("by_strategy"),
            by_generator=tally.table("by_generator"),
            mean_scores=tally.means("scores", DIMENSIONS),
            thresholds=self.thresholds,
        )
