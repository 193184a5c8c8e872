"""Stage 4 flow: kept tasks x teachers x styles -> trajectories with real tool calls.

Picks the items with no finished trajectory (anti-join), fans out one Prefect task per server
group batch, writes each batch as it completes (the flow is the single writer), carries the
circuit breaker's paused servers from finished batches into the next ones, and resumes a
killed run by ingesting its crash journals and replaying their tool results.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from prefect import flow
from prefect.futures import as_completed
from pydantic import BaseModel, Field

from flows.llm_fanout import model_endpoint
from flows.onboard import store_tool_versions
from tasks.agent import AgentBudget, journal_dir, read_journals
from tasks.agent.journal import read_journal
from tasks.agent.tool_changes import new_tool_versions
from tasks.trajectories import (
    STAGE,
    BatchOptions,
    BatchResult,
    ServerEntry,
    TrajectoryBatch,
    TrajectoryItem,
    generate_batch,
    generate_trajectory_batch,
    group_into_batches,
    plan_items,
)
from toucan.config import Settings, check_names, load_settings
from toucan.progress import report_progress
from toucan.records import LlmCacheEntry, Server, Task, ToolCallRecord, Trajectory
from toucan.runs import RunContext, stage_run
from toucan.store import Store

MAX_PARALLEL_BATCHES = 8  # server groups running at once; their items share `concurrency`
MIN_BATCH_ITEMS = 8


class Tally(BaseModel):
    done: int = 0
    failed: int = 0
    tool_calls: int = 0
    tool_errors: int = 0
    tokens: int = 0
    cost_usd: float = 0.0

    def add(self, row: Trajectory) -> None:
        if row.status == "ok":
            self.done += 1
        else:
            self.failed += 1
        self.tool_calls += row.tool_calls
        self.tool_errors += row.tool_errors
        self.tokens += row.usage.total_tokens
        self.cost_usd = round(self.cost_usd + row.cost_usd, 6)


class TrajectoriesSummary(BaseModel):
    run_id: str
    planned: int = 0
    already_done: int = 0
    total: Tally = Field(default_factory=Tally)
    per_teacher: dict[str, Tally] = Field(default_factory=dict)
    per_server: dict[str, Tally] = Field(default_factory=dict)
    stop_reasons: dict[str, int] = Field(default_factory=dict)
    paused_servers: dict[str, dict[str, str]] = Field(default_factory=dict)
    replayed_tool_calls: int = 0


class Plan(BaseModel):
    items: list[TrajectoryItem]
    batches: list[TrajectoryBatch]
    servers: dict[str, ServerEntry]
    already_done: int
    per_batch_concurrency: int
    parallel_batches: int  # batches running at once: never more than `concurrency` items


def select_kept_tasks(store: Store) -> list[Task]:
    """Tasks with a keep verdict (or whose parent has one: irrelevant/diversified variants)."""
    return store.select(
        Task,
        "status = 'ok' AND (task_id IN (SELECT task_id FROM task_ratings WHERE keep) "
        "OR (kind IN ('irrelevant', 'diversified') AND parent_id IN "
        "(SELECT task_id FROM task_ratings WHERE keep)))",
    )


def resolve_teachers(settings: Settings, requested: list[str] | None) -> list[str]:
    configured = [d.name for d in settings.models.teachers]
    chosen = requested or settings.trajectories.teachers or configured
    return check_names(chosen, configured, "teacher", "unknown_teacher")


def plan_work(
    store: Store, settings: Settings, teachers: list[str], styles: list[str], limit: int | None
) -> Plan:
    """The items still to do (no finished row), batched by server group."""
    servers = {
        s.server_id: ServerEntry(server_id=s.server_id, name=s.name, spec=s.spec)
        for s in store.select(Server, "status = 'ok'")
    }
    tasks = [
        t
        for t in select_kept_tasks(store)
        if t.server_ids and all(sid in servers for sid in t.server_ids)
    ]
    items = plan_items(tasks, teachers, styles)
    finished = set()
    if items:
        finished = (
            {
                r[0]
                for r in store.query(
                    "SELECT trajectory_id FROM trajectories WHERE status = 'ok' "
                    "AND list_contains(?, trajectory_id)",
                    [[i.trajectory_id for i in items]],
                )
            }
            if store.count(Trajectory)
            else set()
        )
    pending = [i for i in items if i.trajectory_id not in finished]
    if limit is not None:
        pending = pending[: max(0, limit)]
    concurrency = settings.trajectories.concurrency
    batch_items = max(MIN_BATCH_ITEMS, concurrency)
    batches = group_into_batches(pending, batch_items)
    running = max(1, min(MAX_PARALLEL_BATCHES, len(batches), concurrency))
    return Plan(
        items=pending,
        batches=batches,
        servers=servers,
        already_done=len(finished),
        per_batch_concurrency=max(1, concurrency // running),
        parallel_batches=running,
    )


def ingest_journals(store: Store) -> int:
    """Write what a killed run journaled (tool calls, model replies) and drop the files."""
    records, files = read_journals(journal_dir(store.path))
    finished = [r for r in records if isinstance(r, Trajectory)]
    added = store.upsert(finished) if finished else 0  # newer than any error row of that id
    others = [r for r in records if not isinstance(r, Trajectory)]
    added += store.insert(others) if others else 0
    for path in files:
        path.unlink(missing_ok=True)
    return added


def load_replay(store: Store, trajectory_ids: list[str]) -> dict[str, dict[str, dict[str, Any]]]:
    """trajectory id -> {call key -> result} of tool calls made before an interruption."""
    if not trajectory_ids or not store.count(ToolCallRecord):
        return {}
    rows = store.select(ToolCallRecord, "list_contains(?, trajectory_id)", [trajectory_ids])
    replay: dict[str, dict[str, dict[str, Any]]] = {}
    for row in rows:
        replay.setdefault(row.trajectory_id or "", {})[row.call_key] = row.result
    return replay


def load_cache_entries(
    store: Store, settings: Settings, teachers: list[str]
) -> list[LlmCacheEntry]:
    if not store.count(LlmCacheEntry):
        return []
    names = [d.name for d in settings.models.teachers if d.name in teachers]
    models = [d.model for d in settings.models.teachers if d.name in teachers]
    if settings.models.route_to_local:
        models = [f"openai/{name}" for name in names]
    marks = ", ".join("?" for _ in models)
    return store.select(LlmCacheEntry, f"model IN ({marks})", models)


def batch_options(ctx: RunContext, plan: Plan, local_base_url: str | None) -> BatchOptions:
    settings = ctx.settings
    section = settings.trajectories
    return BatchOptions(
        budget=AgentBudget(max_turns=section.max_turns, wall_clock_s=section.wall_clock_s),
        token_budget=section.tool_result_token_budget,
        concurrency=plan.per_batch_concurrency,
        breaker_failures=settings.mcp.circuit_breaker_failures,
        mcp=settings.mcp,
        models=settings.models.shared_by(plan.parallel_batches),
        local_base_url=local_base_url,
        run_id=ctx.run_id,
        journal_dir=str(journal_dir(ctx.store.path)),
    )


def batch_replay(
    batch: TrajectoryBatch, replay: dict[str, dict[str, dict[str, Any]]]
) -> dict[str, dict[str, Any]]:
    merged: dict[str, dict[str, Any]] = {}
    for item in batch.items:
        merged.update(replay.get(item.trajectory_id, {}))
    return merged


def write_result(
    ctx: RunContext,
    result: BatchResult,
    options: BatchOptions,
    summary: TrajectoriesSummary,
    plan: Plan,
) -> None:
    """Store one finished batch, fold it into the summary, drop its crash journal."""
    ctx.store.upsert(result.trajectories)  # an error row from an earlier run is replaced
    ctx.store.insert([*result.tool_calls, *result.cache_entries, *result.events])
    store_tool_versions(ctx.store, new_tool_versions(result.trajectories), ctx.run_id)
    if options.journal_dir:
        path = Path(options.journal_dir) / f"{options.run_id}-{result.batch_id}.jsonl"
        path.unlink(missing_ok=True)
    for row in result.trajectories:
        summary.total.add(row)
        summary.per_teacher.setdefault(row.teacher, Tally()).add(row)
        for server in {entry["server"] for entry in row.tool_name_map.values()} or {"(none)"}:
            summary.per_server.setdefault(server, Tally()).add(row)
        summary.stop_reasons[row.stop_reason] = summary.stop_reasons.get(row.stop_reason, 0) + 1
        summary.replayed_tool_calls += int(row.metadata.get("replayed_tool_calls", 0))
    summary.paused_servers.update(
        {
            plan.servers[sid].name if sid in plan.servers else sid: why
            for sid, why in result.paused.items()
        }
    )
    report_progress(STAGE, summary.total.done + summary.total.failed, len(plan.items))


def paused_ids(summary_paused: dict[str, dict[str, str]], plan: Plan) -> dict[str, dict[str, str]]:
    by_name = {entry.name: sid for sid, entry in plan.servers.items()}
    return {by_name.get(name, name): why for name, why in summary_paused.items()}


def start_run(
    ctx: RunContext, teachers: list[str] | None, styles: list[str] | None, limit: int | None
) -> tuple[Plan, TrajectoriesSummary, list[str]]:
    ingest_journals(ctx.store)
    chosen = resolve_teachers(ctx.settings, teachers)
    plan = plan_work(
        ctx.store, ctx.settings, chosen, styles or list(ctx.settings.trajectories.styles), limit
    )
    summary = TrajectoriesSummary(
        run_id=ctx.run_id, planned=len(plan.items), already_done=plan.already_done
    )
    report_progress(STAGE, 0, len(plan.items))
    return plan, summary, chosen


@flow(name="trajectories", log_prints=False, persist_result=False)
def trajectories_flow(
    store: str | None = None,
    config: str | None = None,
    profile: str | None = None,
    teachers: list[str] | None = None,
    styles: list[str] | None = None,
    limit: int | None = None,
) -> TrajectoriesSummary:
    """Generate the missing trajectories of every kept task, per teacher and style."""
    settings = load_settings(config, profile=profile)
    target = Store(store or settings.store)
    params = {"teachers": teachers, "styles": styles, "limit": limit}
    with stage_run(target, settings, STAGE, params) as ctx:
        plan, summary, chosen = start_run(ctx, teachers, styles, limit)
        replay = load_replay(ctx.store, [i.trajectory_id for i in plan.items])
        cache = load_cache_entries(ctx.store, settings, chosen)
        with model_endpoint(settings) as base_url:
            options = batch_options(ctx, plan, base_url)
            queue = list(plan.batches)
            running: dict[Any, TrajectoryBatch] = {}
            while queue or running:
                while queue and len(running) < plan.parallel_batches:
                    batch = queue.pop(0)
                    future = generate_trajectory_batch.submit(
                        batch,
                        plan.servers,
                        options,
                        batch_replay(batch, replay),
                        paused_ids(summary.paused_servers, plan),
                        cache,
                    )
                    running[future] = batch
                future = next(as_completed(list(running)))  # the first batch to finish
                running.pop(future)
                write_result(ctx, future.result(), options, summary, plan)
        ctx.summary = summary.model_dump(mode="json")
        return summary


async def run_trajectories(
    settings: Settings,
    store: Store,
    *,
    teachers: list[str] | None = None,
    styles: list[str] | None = None,
    limit: int | None = None,
    local_base_url: str | None = None,
) -> TrajectoriesSummary:
    """The same stage without Prefect (one event loop): for benchmarks and embedding."""
    params = {"teachers": teachers, "styles": styles, "limit": limit, "prefect": False}
    with stage_run(store, settings, STAGE, params) as ctx:
        plan, summary, chosen = start_run(ctx, teachers, styles, limit)
        replay = load_replay(ctx.store, [i.trajectory_id for i in plan.items])
        cache = load_cache_entries(ctx.store, settings, chosen)
        options = batch_options(ctx, plan, local_base_url)
        gate = asyncio.Semaphore(plan.parallel_batches)

        async def run_batch(batch: TrajectoryBatch) -> None:
            async with gate:
                result = await generate_batch(
                    batch,
                    plan.servers,
                    options,
                    replay=batch_replay(batch, replay),
                    paused=paused_ids(summary.paused_servers, plan),
                    cache_entries=cache,
                )
            await asyncio.to_thread(write_result, ctx, result, options, summary, plan)

        await asyncio.gather(*(run_batch(batch) for batch in plan.batches))
        ctx.summary = summary.model_dump(mode="json")
        return summary


__all__ = ["TrajectoriesSummary", "read_journal", "run_trajectories", "trajectories_flow"]
