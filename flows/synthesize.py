"""Stage 2 flow: plan task slots from the seed, synthesize the unfinished ones, drop
near-duplicates (keep one of each pair), summarise.

`synthesize_flow` fans batches out as Prefect tasks; `run_synthesize` runs the same stage on
plain asyncio (the Prefect-overhead benchmark compares the two). Both share every step.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from prefect import flow
from pydantic import BaseModel, Field

from flows.dedup import dedup_pending_tasks
from flows.llm_fanout import run_job, run_job_async, unfinished_ids, write_output
from tasks.llm_batch import PARALLEL_BATCHES, BatchOutput, ProgressCounter, split_batches
from tasks.sampling import PlanRequest, ServerView, TaskSlot, plan_slots
from tasks.synthesize import STAGE, synthesize_batch
from toucan.config import Settings, load_settings
from toucan.llm.cache import LlmCache
from toucan.progress import report_progress
from toucan.records import Server, Task, Tool
from toucan.runs import RunContext, stage_run
from toucan.store import Store


class SynthesizeSummary(BaseModel):
    run_id: str
    planned: int = 0
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


def load_server_views(store: Store) -> list[ServerView]:
    """Servers usable for synthesis (ok, or specs_only from a catalog) with current tools."""
    servers = store.select(Server, "status IN ('ok', 'specs_only') ORDER BY server_id")
    tools: dict[str, list[Tool]] = {}
    for tool in store.select(Tool, "current ORDER BY server_id, name"):
        tools.setdefault(tool.server_id, []).append(tool)
    return [ServerView(server=s, tools=tuple(tools.get(s.server_id, ()))) for s in servers]


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


def select_todo(store: Store, slots: list[TaskSlot]) -> list[TaskSlot]:
    todo = unfinished_ids(store, Task, [slot.task_id for slot in slots])
    return [slot for slot in slots if slot.task_id in todo]


def drop_near_duplicates(ctx: RunContext) -> dict[str, str]:
    """Keep-one dedup of the ok tasks new since the last pass (`flows.dedup`). Idempotent."""
    return dedup_pending_tasks(ctx.store, ctx.settings.synthesize.dedup_threshold)


def summarize(
    run_id: str, planned: int, todo: int, tasks: list[Task], near_dups: int
) -> SynthesizeSummary:
    ok = [t for t in tasks if t.status == "ok"]
    return SynthesizeSummary(
        run_id=run_id,
        planned=planned,
        already_done=planned - todo,
        attempted=len(tasks),
        by_status=dict(Counter(t.status for t in tasks)),
        by_reason=dict(Counter(t.reason for t in tasks if t.reason)),
        by_strategy=dict(Counter(t.strategy for t in ok)),
        by_generator=dict(Counter(t.generator for t in ok)),
        near_duplicates=near_dups,
        tokens_in=sum(t.usage.prompt_tokens for t in tasks if not t.cached),
        tokens_out=sum(t.usage.completion_tokens for t in tasks if not t.cached),
        cost_usd=round(sum(t.cost_usd for t in tasks), 6),
    )


class SynthesisRun:
    """The steps both entry points share, around one stage_run context."""

    def __init__(self, ctx: RunContext, request: PlanRequest) -> None:
        self.ctx = ctx
        settings = ctx.settings
        views = load_server_views(ctx.store)
        self.slots = plan_slots(views, settings.models.generators, request)
        self.todo = select_todo(ctx.store, self.slots)
        self.views = {v.server_id: v for v in views}
        concurrency = min(settings.synthesize.concurrency, settings.max_in_flight)
        self.batches, self.per_batch = split_batches(self.todo, concurrency)
        self.written: list[Task] = []
        self.progress = ProgressCounter(STAGE, len(self.todo))
        report_progress(STAGE, 0, len(self.todo))

    def batch_kwargs(self, local_base_url: str | None) -> dict[str, Any]:
        cache = LlmCache.load(self.ctx.store, self.ctx.run_id) if self.todo else None
        return {
            "views": self.views,
            "models": self.ctx.settings.models.shared_by(min(PARALLEL_BATCHES, len(self.batches))),
            "run_id": self.ctx.run_id,
            "concurrency": self.per_batch,
            "local_base_url": local_base_url,
            "cache": cache,
            "progress": self.progress,
        }

    def write(self, output: BatchOutput) -> None:
        write_output(self.ctx, output)
        self.written.extend(output.records)

    def finish(self) -> SynthesizeSummary:
        dropped = drop_near_duplicates(self.ctx)
        written = [
            t.model_copy(update={"status": "rejected", "reason": "near_duplicate"})
            if t.task_id in dropped
            else t
            for t in self.written
        ]
        summary = summarize(self.ctx.run_id, len(self.slots), len(self.todo), written, len(dropped))
        self.ctx.summary = summary.model_dump(mode="json")
        return summary


@flow(name="synthesize", log_prints=False, persist_result=False, validate_parameters=False)
def synthesize_flow(
    store: str | None = None,
    config: str | None = None,
    profile: str | None = None,
    strategies: list[str] | None = None,
    per_server: int | None = None,
    limit: int | None = None,
    seed: int | None = None,
) -> SynthesizeSummary:
    """Synthesize tasks over the servers in the store; a re-run finishes what is missing."""
    settings = load_settings(config, profile=profile)
    request = plan_request(settings, strategies, per_server, limit, seed)
    params = request.model_dump(mode="json")
    with stage_run(Store(store or settings.store), settings, STAGE, params) as ctx:
        job = SynthesisRun(ctx, request)
        run_job(job, synthesize_batch, settings)
        return job.finish()


async def run_synthesize(
    settings: Settings, store: Store, request: PlanRequest
) -> SynthesizeSummary:
    """Stage 2 without Prefect: the same plan, batches, writes and dedup on plain asyncio."""
    with stage_run(store, settings, STAGE, request.model_dump(mode="json")) as ctx:
        job = SynthesisRun(ctx, request)
        await run_job_async(job, synthesize_batch, settings)
        return job.finish()
