"""Stage 5 flow: rate every trajectory that has no final rating yet (rules + judge), keep by
the configured rule. `run_filter_trajectories` is the same stage on plain asyncio."""

from __future__ import annotations

from collections import Counter
from typing import Any

from prefect import flow
from pydantic import BaseModel, Field

from flows.llm_fanout import run_job, run_job_async, unfinished_ids, write_output
from tasks.filter_trajectories import (
    JUDGE_GROUP,
    STAGE,
    RatingItem,
    filter_trajectories_batch,
    make_rating_id,
)
from tasks.llm_batch import PARALLEL_BATCHES, BatchOutput, ProgressCounter, split_batches
from toucan.config import Settings, load_settings
from toucan.llm.cache import LlmCache
from toucan.progress import report_progress
from toucan.records import Task, Trajectory, TrajectoryRating
from toucan.runs import RunContext, stage_run
from toucan.store import Store


class KeepTally(BaseModel):
    rated: int = 0
    kept: int = 0
    errors: int = 0
    keep_rate: float = 0.0

    def add(self, rating: TrajectoryRating) -> None:
        self.rated += 1
        self.kept += int(rating.keep)
        self.errors += int(rating.status == "error")
        self.keep_rate = round(self.kept / self.rated, 4)


class FilterTrajectoriesSummary(BaseModel):
    run_id: str
    candidates: int = 0
    already_rated: int = 0
    total: KeepTally = Field(default_factory=KeepTally)
    per_teacher: dict[str, KeepTally] = Field(default_factory=dict)
    per_server: dict[str, KeepTally] = Field(default_factory=dict)
    flags_fired: dict[str, int] = Field(default_factory=dict)
    leaks_by_kind: dict[str, int] = Field(default_factory=dict)  # kind -> trajectories
    by_reason: dict[str, int] = Field(default_factory=dict)
    mean_scores: dict[str, float] = Field(default_factory=dict)
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0


def select_unrated(
    store: Store, judges: list[str], limit: int | None
) -> tuple[list[RatingItem], int]:
    """Trajectories without a final rating (with their tasks), and how many are rated."""
    rows = store.select(Trajectory, "true ORDER BY started_at, trajectory_id")
    by_rating = {make_rating_id(r.trajectory_id, judges): r for r in rows}
    todo_ids = unfinished_ids(store, TrajectoryRating, list(by_rating))
    todo = [row for rating_id, row in by_rating.items() if rating_id in todo_ids]
    tasks = (
        {
            t.task_id: t
            for t in store.select(
                Task, "list_contains(?, task_id)", [sorted({r.task_id for r in todo})]
            )
        }
        if todo
        else {}
    )
    items = [
        RatingItem(trajectory=row, task=tasks[row.task_id]) for row in todo if row.task_id in tasks
    ]
    return (items[:limit] if limit is not None else items), len(rows) - len(todo)


class FilterRun:
    """The steps both entry points share, around one stage_run context."""

    def __init__(self, ctx: RunContext, limit: int | None) -> None:
        self.ctx = ctx
        settings = ctx.settings
        judges = [d.name for d in settings.models.group(JUDGE_GROUP)]
        todo, self.already = select_unrated(ctx.store, judges, limit)
        self.items = {i.trajectory.trajectory_id: i for i in todo}
        concurrency = min(settings.filter_trajectories.concurrency, settings.max_in_flight)
        self.batches, self.per_batch = split_batches(todo, concurrency)
        self.ratings: list[TrajectoryRating] = []
        self.progress = ProgressCounter(STAGE, len(todo))
        report_progress(STAGE, 0, len(todo))

    def batch_kwargs(self, local_base_url: str | None) -> dict[str, Any]:
        return {
            "models": self.ctx.settings.models.shared_by(min(PARALLEL_BATCHES, len(self.batches))),
            "section": self.ctx.settings.filter_trajectories,
            "run_id": self.ctx.run_id,
            "concurrency": self.per_batch,
            "local_base_url": local_base_url,
            "cache": LlmCache.load(self.ctx.store, self.ctx.run_id),
            "progress": self.progress,
        }

    def write(self, output: BatchOutput) -> None:
        write_output(self.ctx, output)
        self.ratings.extend(output.records)

    def finish(self) -> FilterTrajectoriesSummary:
        summary = FilterTrajectoriesSummary(
            run_id=self.ctx.run_id,
            candidates=len(self.items) + self.already,
            already_rated=self.already,
        )
        flags: Counter[str] = Counter()
        leaks: Counter[str] = Counter()
        for rating in self.ratings:
            row = self.items[rating.trajectory_id].trajectory
            summary.total.add(rating)
            summary.per_teacher.setdefault(row.teacher, KeepTally()).add(rating)
            for server in {e["server"] for e in row.tool_name_map.values()} or {"(none)"}:
                summary.per_server.setdefault(server, KeepTally()).add(rating)
            flags.update(name for name, fired in rating.flags.items() if fired)
            leaks.update(rating.leaks.keys())
        summary.flags_fired = dict(flags)
        summary.leaks_by_kind = dict(leaks)
        summary.by_reason = dict(Counter(r.reason for r in self.ratings if r.reason))
        scored = [r for r in self.ratings if r.scores]
        for name in ("completeness", "conciseness"):
            values = [r.scores[name].score for r in scored if name in r.scores]
            if values:
                summary.mean_scores[name] = round(sum(values) / len(values), 3)
        tokens = self.ctx.store.query(
            "SELECT coalesce(sum(tokens_in), 0), coalesce(sum(tokens_out), 0), "
            "coalesce(sum(cost_usd), 0) FROM events WHERE run_id = ? AND kind = 'llm_call'",
            [self.ctx.run_id],
        )[0]
        summary.tokens_in, summary.tokens_out = int(tokens[0]), int(tokens[1])
        summary.cost_usd = round(float(tokens[2]), 6)
        self.ctx.summary = summary.model_dump(mode="json")
        return summary


@flow(name="filter_trajectories", log_prints=False, persist_result=False, validate_parameters=False)
def filter_trajectories_flow(
    store: str | None = None,
    config: str | None = None,
    profile: str | None = None,
    limit: int | None = None,
) -> FilterTrajectoriesSummary:
    """Rate the trajectories that have no rating yet; a re-run finishes what is missing."""
    settings = load_settings(config, profile=profile)
    with stage_run(Store(store or settings.store), settings, STAGE, {"limit": limit}) as ctx:
        job = FilterRun(ctx, limit)
        run_job(job, filter_trajectories_batch, settings)
        return job.finish()


async def run_filter_trajectories(
    settings: Settings, store: Store, limit: int | None = None
) -> FilterTrajectoriesSummary:
    """Stage 5 without Prefect: the same selection, batches and writes on plain asyncio."""
    with stage_run(store, settings, STAGE, {"limit": limit}) as ctx:
        job = FilterRun(ctx, limit)
        await run_job_async(job, filter_trajectories_batch, settings)
        return job.finish()
