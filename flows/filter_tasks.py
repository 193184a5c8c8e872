"""Stage 3 flow: the judge rates every ok task that has no final rating yet; thresholds decide
which are kept. `run_filter_tasks` is the same stage on plain asyncio, without Prefect."""

from __future__ import annotations

from collections import Counter
from typing import Any

from prefect import flow
from pydantic import BaseModel, Field

from flows.llm_fanout import run_job, run_job_async, unfinished_ids, write_output
from flows.synthesize import load_server_views
from tasks.filter_tasks import (
    DIMENSIONS,
    JUDGE_GROUP,
    STAGE,
    check_thresholds,
    filter_tasks_batch,
    make_rating_id,
)
from tasks.llm_batch import PARALLEL_BATCHES, BatchOutput, ProgressCounter, split_batches
from toucan.config import Settings, load_settings
from toucan.llm.cache import LlmCache
from toucan.progress import report_progress
from toucan.records import Task, TaskRating
from toucan.runs import RunContext, stage_run
from toucan.store import Store


class FilterTasksSummary(BaseModel):
    run_id: str
    candidates: int = 0
    already_rated: int = 0
    rated: int = 0
    kept: int = 0
    rejected: int = 0
    errors: int = 0
    by_reason: dict[str, int] = Field(default_factory=dict)
    by_strategy: dict[str, dict[str, int]] = Field(default_factory=dict)  # kept / rejected
    by_generator: dict[str, dict[str, int]] = Field(default_factory=dict)
    mean_scores: dict[str, float] = Field(default_factory=dict)
    thresholds: dict[str, int] = Field(default_factory=dict)
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0


def select_unrated(store: Store, judges: list[str], limit: int | None) -> tuple[list[Task], int]:
    """(ok tasks without a final rating, in a stable order, at most `limit`; how many are rated)."""
    candidates = store.select(Task, "status = 'ok' ORDER BY created_at, task_id")
    by_rating = {make_rating_id(t.task_id, judges): t for t in candidates}
    todo_ids = unfinished_ids(store, TaskRating, list(by_rating))
    todo = [task for rating_id, task in by_rating.items() if rating_id in todo_ids]
    already = len(candidates) - len(todo)
    return (todo[:limit] if limit is not None else todo), already


def outcome_of(rating: TaskRating) -> str:
    return "error" if rating.status == "error" else ("kept" if rating.keep else "rejected")


def summarize(
    ctx: RunContext,
    tasks: dict[str, Task],
    ratings: list[TaskRating],
    already: int,
    thresholds: dict[str, int],
) -> FilterTasksSummary:
    outcomes = Counter(outcome_of(r) for r in ratings)
    by_strategy: dict[str, Counter[str]] = {}
    by_generator: dict[str, Counter[str]] = {}
    for rating in ratings:
        task_row = tasks[rating.task_id]
        by_strategy.setdefault(task_row.strategy, Counter())[outcome_of(rating)] += 1
        by_generator.setdefault(task_row.generator, Counter())[outcome_of(rating)] += 1
    scored = [r for r in ratings if r.status == "ok"]
    means = (
        {d: round(sum(r.scores[d].score for r in scored) / len(scored), 3) for d in DIMENSIONS}
        if scored
        else {}
    )
    tokens = ctx.store.query(
        "SELECT coalesce(sum(tokens_in), 0), coalesce(sum(tokens_out), 0), "
        "coalesce(sum(cost_usd), 0) FROM events WHERE run_id = ? AND kind = 'llm_call'",
        [ctx.run_id],
    )[0]
    return FilterTasksSummary(
        run_id=ctx.run_id,
        candidates=len(tasks) + already,
        already_rated=already,
        rated=len(ratings),
        kept=outcomes["kept"],
        rejected=outcomes["rejected"],
        errors=outcomes["error"],
        by_reason=dict(Counter(r.reason for r in ratings if r.reason)),
        by_strategy={k: dict(v) for k, v in by_strategy.items()},
        by_generator={k: dict(v) for k, v in by_generator.items()},
        mean_scores=means,
        thresholds=thresholds,
        tokens_in=int(tokens[0]),
        tokens_out=int(tokens[1]),
        cost_usd=round(float(tokens[2]), 6),
    )


class FilterRun:
    """The steps both entry points share, around one stage_run context."""

    def __init__(self, ctx: RunContext, limit: int | None) -> None:
        self.ctx = ctx
        settings = ctx.settings
        self.thresholds = check_thresholds(settings.filter_tasks.thresholds)
        judges = [d.name for d in settings.models.group(JUDGE_GROUP)]
        todo, self.already = select_unrated(ctx.store, judges, limit)
        self.tasks = {t.task_id: t for t in todo}
        self.views = {v.server_id: v for v in load_server_views(ctx.store)}
        concurrency = min(settings.filter_tasks.concurrency, settings.max_in_flight)
        self.batches, self.per_batch = split_batches(todo, concurrency)
        self.ratings: list[TaskRating] = []
        self.progress = ProgressCounter(STAGE, len(todo))
        report_progress(STAGE, 0, len(todo))

    def batch_kwargs(self, local_base_url: str | None) -> dict[str, Any]:
        return {
            "views": self.views,
            "models": self.ctx.settings.models.shared_by(min(PARALLEL_BATCHES, len(self.batches))),
            "thresholds": self.thresholds,
            "run_id": self.ctx.run_id,
            "concurrency": self.per_batch,
            "local_base_url": local_base_url,
            "cache": LlmCache.load(self.ctx.store, self.ctx.run_id),
            "progress": self.progress,
        }

    def write(self, output: BatchOutput) -> None:
        write_output(self.ctx, output)
        self.ratings.extend(output.records)

    def finish(self) -> FilterTasksSummary:
        summary = summarize(self.ctx, self.tasks, self.ratings, self.already, self.thresholds)
        self.ctx.summary = summary.model_dump(mode="json")
        return summary


@flow(name="filter_tasks", log_prints=False, persist_result=False, validate_parameters=False)
def filter_tasks_flow(
    store: str | None = None,
    config: str | None = None,
    profile: str | None = None,
    limit: int | None = None,
) -> FilterTasksSummary:
    """Rate the synthesized tasks that have no rating yet; a re-run finishes what is missing."""
    settings = load_settings(config, profile=profile)
    with stage_run(Store(store or settings.store), settings, STAGE, {"limit": limit}) as ctx:
        job = FilterRun(ctx, limit)
        run_job(job, filter_tasks_batch, settings)
        return job.finish()


async def run_filter_tasks(
    settings: Settings, store: Store, limit: int | None = None
) -> FilterTasksSummary:
    """Stage 3 without Prefect: the same selection, batches and writes on plain asyncio."""
    with stage_run(store, settings, STAGE, {"limit": limit}) as ctx:
        job = FilterRun(ctx, limit)
        await run_job_async(job, filter_tasks_batch, settings)
        return job.finish()
