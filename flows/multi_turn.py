"""Extension 3: multi-turn conversations by splitting kept multi-tool tasks and by extending
kept trajectories with simulated follow-ups, on live MCP sessions. Ids are deterministic, so
a re-run only does what is missing."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from flows.queries import select_kept_original_tasks, select_kept_trajectories, split_unfinished
from flows.runner import RunContext, StageJob, StagePlan, StageSummary
from flows.trajectories import agent_cache, agent_options
from flows.writes import write_agent_output
from tasks.agent.breaker import ServerBreaker
from tasks.multi_turn_batch import MultiTurnBatch, group_items, run_multi_turn_batch
from tasks.multi_turn_records import STAGE, MultiTurnItem, extend_item_id, split_item_id
from tasks.trajectories import BatchResult, ServerEntry
from toucan.config import Settings
from toucan.records import Server, Task, Trajectory
from toucan.store import Store

METHODS = ("split", "extend")
BATCH_ITEMS = 16


class MultiTurnSummary(StageSummary):
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


class MultiTurnJob(StageJob[MultiTurnBatch]):
    """Runs the missing conversations, one batch per server group, all batches at once."""

    name = STAGE
    batch_fn = run_multi_turn_batch
    needs_model = True

    def plan(self, ctx: RunContext) -> StagePlan[MultiTurnBatch]:
        methods = self.params.methods or list(METHODS)
        turns = self.params.follow_ups
        follow_ups = self.settings.extensions.multi_turn_user_turns if turns is None else turns
        items, self.servers = plan_items(ctx.store, self.settings, methods, follow_ups)
        tries = self.settings.retries.max_attempts
        todo, already = split_unfinished(
            ctx.store, Trajectory, items, lambda i: i.trajectory_id, tries
        )
        batches = group_items(todo, BATCH_ITEMS)
        return StagePlan(len(todo), already, batches, parallel=len(batches))

    def batch_kwargs(self, ctx: RunContext) -> dict[str, Any]:
        concurrency = self.settings.trajectories.concurrency // min(2, ctx.plan.running)
        options = agent_options(ctx, max(1, concurrency))
        breaker = ServerBreaker(self.settings.mcp.circuit_breaker_failures)  # the run's
        return {
            "servers": self.servers,
            "options": options,
            "cache": agent_cache(ctx),  # teachers and the user simulator: every model's
            "breaker": breaker,
        }

    def write(self, ctx: RunContext, output: BatchResult) -> None:
        write_agent_output(ctx, output)
        for row in output.trajectories:
            ctx.tally.item(row.status, row.reason)
            if row.status == "ok":
                method = row.metadata.get("multi_turn_generation", {}).get("method")
                ctx.tally.add("by_method", method)
            ctx.tally.add("requested_turns", "", row.requested_turns)
            ctx.tally.add("completed_turns", "", row.completed_turns)

    def summarise(self, ctx: RunContext) -> BaseModel:
        return MultiTurnSummary.of(
            ctx,
            planned=ctx.plan.planned + ctx.plan.already_done,
            by_method=ctx.tally.counts("by_method"),
            requested_turns=ctx.tally.total("requested_turns"),
            completed_turns=ctx.tally.total("completed_turns"),
        )
