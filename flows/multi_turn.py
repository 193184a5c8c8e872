"""Extension 3 flow: multi-turn conversations by splitting kept multi-tool tasks and by
extending kept trajectories with simulated follow-ups, on live MCP sessions.

`multi_turn_flow` fans server-group batches out as Prefect tasks; `run_multi_turn` runs the
same stage on plain asyncio. Ids are deterministic, so a re-run only does what is missing.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from prefect import flow
from pydantic import BaseModel, Field

from flows.kept import select_kept_original_tasks, select_kept_trajectories
from flows.llm_fanout import model_endpoint, unfinished_ids
from flows.onboard import store_tool_versions
from tasks.agent import AgentBudget
from tasks.agent.tool_changes import new_tool_versions
from tasks.multi_turn_batch import (
    MultiTurnBatch,
    group_items,
    multi_turn_batch,
    run_multi_turn_batch,
)
from tasks.multi_turn_records import STAGE, MultiTurnItem, extend_item_id, split_item_id
from tasks.trajectories import BatchOptions, BatchResult, ServerEntry
from toucan.config import Settings, load_settings
from toucan.progress import report_progress
from toucan.records import LlmCacheEntry, Server, Task, Trajectory
from toucan.runs import RunContext, stage_run
from toucan.store import Store

METHODS = ("split", "extend")
BATCH_ITEMS = 16


class MultiTurnSummary(BaseModel):
    run_id: str
    planned: int = 0
    already_done: int = 0
    by_method: dict[str, int] = Field(default_factory=dict)  # ok conversations
    by_status: dict[str, int] = Field(default_factory=dict)
    by_reason: dict[str, int] = Field(default_factory=dict)
    requested_turns: int = 0
    completed_turns: int = 0


def plan_items(
    store: Store, settings: Settings, methods: list[str], follow_ups: int
) -> tuple[list[MultiTurnItem], dict[str, ServerEntry]]:
    """Every conversation the kept rows call for, whose servers are all usable."""
    servers = {
        s.server_id: ServerEntry(server_id=s.server_id, name=s.name, spec=s.spec)
        for s in store.select(Server, "status = 'ok'")
    }
    teacher = (settings.trajectories.teachers or [d.name for d in settings.models.teachers])[0]
    items: list[MultiTurnItem] = []
    if "split" in methods:
        items += [
            MultiTurnItem(
                trajectory_id=split_item_id(t.task_id, teacher),
                method="split",
                task=t,
                teacher=teacher,
            )
            for t in select_kept_original_tasks(store)
            if len(t.target_tools) >= 2
        ]
    if "extend" in methods and follow_ups > 0:
        bases = [b for b in select_kept_trajectories(store) if b.style == "function-calling"]
        tasks = {t.task_id: t for t in store.select(Task, "kind = 'original'")}
        items += [
            MultiTurnItem(
                trajectory_id=extend_item_id(b.trajectory_id, follow_ups),
                method="extend",
                task=tasks[b.task_id],
                teacher=b.teacher,
                follow_ups=follow_ups,
                base=b,
            )
            for b in bases
            if b.task_id in tasks
        ]
    usable = [
        i for i in items if i.task.server_ids and all(s in servers for s in i.task.server_ids)
    ]
    return usable, servers


class MultiTurnRun:
    """The steps both entry points share, around one stage_run context."""

    def __init__(self, ctx: RunContext, methods: list[str] | None, follow_ups: int | None) -> None:
        self.ctx = ctx
        settings = ctx.settings
        chosen = methods or list(METHODS)
        turns = settings.extensions.multi_turn_user_turns if follow_ups is None else follow_ups
        items, self.servers = plan_items(ctx.store, settings, chosen, turns)
        todo = unfinished_ids(ctx.store, Trajectory, [i.trajectory_id for i in items])
        self.todo = [i for i in items if i.trajectory_id in todo]
        self.batches = group_items(self.todo, BATCH_ITEMS)
        self.summary = MultiTurnSummary(
            run_id=ctx.run_id, planned=len(items), already_done=len(items) - len(self.todo)
        )
        self.done = 0
        report_progress(STAGE, 0, len(self.todo))

    def options(self, local_base_url: str | None) -> BatchOptions:
        section = self.ctx.settings.trajectories
        return BatchOptions(
            budget=AgentBudget(max_turns=section.max_turns, wall_clock_s=section.wall_clock_s),
            token_budget=section.tool_result_token_budget,
            concurrency=max(1, section.concurrency // max(1, min(2, len(self.batches)))),
            mcp=self.ctx.settings.mcp,
            models=self.ctx.settings.models.shared_by(len(self.batches)),  # all run at once
            local_base_url=local_base_url,
            run_id=self.ctx.run_id,
        )

    def cache_entries(self) -> list[LlmCacheEntry]:
        return self.ctx.store.select(LlmCacheEntry) if self.todo else []

    def write(self, result: BatchResult) -> None:
        store = self.ctx.store
        store.upsert(result.trajectories)  # an error row from an earlier run is replaced
        store.insert([*result.tool_calls, *result.cache_entries, *result.events])
        store_tool_versions(store, new_tool_versions(result.trajectories), self.ctx.run_id)
        self.ctx.flush_events()
        rows = result.trajectories
        summary = self.summary
        summary.by_status = dict(Counter(summary.by_status) + Counter(r.status for r in rows))
        summary.by_reason = dict(
            Counter(summary.by_reason) + Counter(r.reason for r in rows if r.reason)
        )
        summary.by_method = dict(
            Counter(summary.by_method)
            + Counter(
                r.metadata.get("multi_turn_generation", {}).get("method")
                for r in rows
                if r.status == "ok"
            )
        )
        summary.requested_turns += sum(r.requested_turns for r in rows)
        summary.completed_turns += sum(r.completed_turns for r in rows)
        self.done += len(rows)
        report_progress(STAGE, self.done, len(self.todo))

    def finish(self) -> MultiTurnSummary:
        self.ctx.summary = self.summary.model_dump(mode="json")
        return self.summary


@flow(name="multi-turn", log_prints=False, persist_result=False, validate_parameters=False)
def multi_turn_flow(
    store: str | None = None,
    config: str | None = None,
    profile: str | None = None,
    methods: list[str] | None = None,
    follow_ups: int | None = None,
) -> MultiTurnSummary:
    """Split kept tasks and extend kept trajectories into multi-turn conversations."""
    settings = load_settings(config, profile=profile)
    params = {"methods": methods, "follow_ups": follow_ups}
    with stage_run(Store(store or settings.store), settings, STAGE, params) as ctx:
        job = MultiTurnRun(ctx, methods, follow_ups)
        if job.todo:
            with model_endpoint(settings) as base_url:
                options, cached = job.options(base_url), job.cache_entries()
                futures = [
                    multi_turn_batch.submit(b, job.servers, options, cached) for b in job.batches
                ]
                for future in futures:
                    job.write(future.result())
        return job.finish()


async def run_multi_turn(
    settings: Settings,
    store: Store,
    methods: list[str] | None = None,
    follow_ups: int | None = None,
) -> MultiTurnSummary:
    """Extension 3 without Prefect: the same batches on plain asyncio."""
    with stage_run(store, settings, STAGE, {"methods": methods, "follow_ups": follow_ups}) as ctx:
        job = MultiTurnRun(ctx, methods, follow_ups)
        if job.todo:
            with model_endpoint(settings) as base_url:
                options, cached = job.options(base_url), job.cache_entries()
                results = await asyncio.gather(
                    *(run_multi_turn_batch(b, job.servers, options, cached) for b in job.batches)
                )
                for result in results:
                    job.write(result)
        return job.finish()


__all__ = ["Any", "MultiTurnBatch", "MultiTurnSummary", "multi_turn_flow", "run_multi_turn"]
