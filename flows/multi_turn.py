"""Extension 3: multi-turn conversations by splitting kept multi-tool tasks and by extending
kept trajectories with simulated follow-ups, on live MCP sessions. Ids are deterministic, so
a re-run only does what is missing."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, Field

from flows.queries import (
    CHECK_IDS,
    select_walked,
    select_walked_with_tasks,
    unfinished_ids,
    walk_extendable_trajectories,
    walk_multi_tool_tasks,
)
from flows.run_context import Stream
from flows.runner import RunContext, StageJob, StagePlan, StageSummary
from flows.trajectories import (
    MAX_PARALLEL_BATCHES,
    agent_cache,
    agent_options,
    usable_servers,
)
from flows.writes import write_agent_output
from tasks.agent.batch import batch_layout, make_agent_batch
from tasks.agent.breaker import ServerBreaker
from tasks.llm_batch import chunked
from tasks.multi_turn_batch import MultiTurnBatch, run_multi_turn_batch
from tasks.multi_turn_records import STAGE, MultiTurnItem, extend_item_id, split_item_id
from tasks.trajectories import BatchResult, ServerEntry
from toucan.config import Settings
from toucan.records import Task, Trajectory
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


@dataclass
class ServerGroup:
    """The conversations to do on one exact set of servers, in plan order: the kept tasks to
    split (task ids, id order), then the kept trajectories to extend (ids, id order)."""

    split: list[str] = field(default_factory=list)
    extend: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.split) + len(self.extend)

    def cut(self, start: int, end: int) -> tuple[list[str], list[str]]:
        """(task ids, trajectory ids) of the conversations start..end of the group."""
        first = len(self.split)
        return self.split[start:end], self.extend[max(0, start - first) : max(0, end - first)]


@dataclass(frozen=True)
class Conversations:
    """How the plan names a conversation from its source (a task to split, a trajectory to
    extend) and makes the items of a batch from their sources' ids."""

    teacher: str  # the one a split runs on; an extension keeps its base's
    follow_ups: int

    def row_id(self, method: str, source_id: str) -> str:
        if method == "split":
            return split_item_id(source_id, self.teacher)
        return extend_item_id(source_id, self.follow_ups)

    def items(self, store: Store, task_ids: list[str], base_ids: list[str]) -> list[MultiTurnItem]:
        """The items of these sources, in their order, their rows read now: the tasks, then
        the base trajectories with their tasks."""
        splits = [
            MultiTurnItem(
                trajectory_id=self.row_id("split", task.task_id),
                method="split",
                task=task,
                teacher=self.teacher,
            )
            for task in select_walked(store, Task, "task_id", [(t, t) for t in task_ids])
        ]
        bases = select_walked_with_tasks(store, "trajectory_id", [(b, b) for b in base_ids])
        return splits + [
            MultiTurnItem(
                trajectory_id=self.row_id("extend", base.trajectory_id),
                method="extend",
                task=task,
                teacher=base.teacher,
                follow_ups=self.follow_ups,
                base=base,
            )
            for base, task in bases
        ]


@dataclass
class Plan:
    """The conversations still to do, streamed in batches: what is held is an id per
    conversation; a batch's tasks and base trajectories are read when it is made."""

    batches: Stream[MultiTurnBatch]
    servers: dict[str, ServerEntry]
    planned: int
    already_done: int


def plan_items(store: Store, settings: Settings, methods: list[str], follow_ups: int) -> Plan:
    """Every conversation the kept rows call for whose servers are all usable and whose row
    is unfinished (no row, or a retryable error with tries left), in batches of
    `BATCH_ITEMS` by exact server set (`batch_layout`; a group's splits first, then its
    extensions, each in id order), each batch's rows read as the stream reaches it."""
    servers = usable_servers(store)
    teacher = (settings.trajectories.teachers or [d.name for d in settings.models.teachers])[0]
    made = Conversations(teacher, follow_ups)
    chosen = [m for m in METHODS if m in methods and (m == "split" or follow_ups > 0)]
    candidates = usable_sources(store, chosen, set(servers))
    tries = settings.retries.max_attempts
    groups, already_done = group_unfinished(store, candidates, made.row_id, tries)
    sizes = {key: len(group) for key, group in groups.items()}
    layout = batch_layout(sizes, BATCH_ITEMS, lanes=None, scout_size=1)

    def batches() -> Iterator[MultiTurnBatch]:
        for key, start, end in layout:
            items = made.items(store, *groups[key].cut(start, end))
            yield make_agent_batch(MultiTurnBatch, "mtbatch", key, items)

    return Plan(Stream(len(layout), batches), servers, sum(sizes.values()), already_done)


def usable_sources(
    store: Store, methods: list[str], servers: set[str]
) -> Iterator[tuple[str, str, tuple[str, ...]]]:
    """(method, source id, server set) of the conversations of these methods whose servers
    are all usable, in plan order (the splits, then the extensions), walked from the store a
    page at a time; each server set is one shared tuple (a chunk of them stays small)."""
    walks = {"split": walk_multi_tool_tasks, "extend": walk_extendable_trajectories}
    server_sets: dict[tuple[str, ...], tuple[str, ...]] = {}
    for method in methods:
        for source_id, server_ids in walks[method](store):
            if server_ids and servers.issuperset(server_ids):
                key = tuple(sorted(set(server_ids)))
                yield method, source_id, server_sets.setdefault(key, key)


def group_unfinished(
    store: Store,
    candidates: Iterable[tuple[str, str, tuple[str, ...]]],
    row_id: Callable[[str, str], str],
    max_attempts: int,
) -> tuple[dict[tuple[str, ...], ServerGroup], int]:
    """(the source ids of the (method, source id, server set) candidates whose row is
    unfinished, by server set, in candidate order; how many are finished), their rows
    checked CHECK_IDS at a time."""
    groups: dict[tuple[str, ...], ServerGroup] = {}
    finished = 0
    for chunk in chunked(candidates, CHECK_IDS):
        ids = [row_id(method, source_id) for method, source_id, _ in chunk]
        todo_ids = unfinished_ids(store, Trajectory, ids, max_attempts)
        finished += len(ids) - len(todo_ids)
        for row, (method, source_id, key) in zip(ids, chunk, strict=True):
            if row in todo_ids:
                group = groups.setdefault(key, ServerGroup())
                (group.split if method == "split" else group.extend).append(source_id)
    return groups, finished


class MultiTurnJob(StageJob[MultiTurnBatch]):
    """Runs the missing conversations in batches of one server group, up to
    MAX_PARALLEL_BATCHES of them at once, the stage's concurrency shared between them."""

    name = STAGE
    batch_fn = run_multi_turn_batch
    needs_model = True

    def plan(self, ctx: RunContext) -> StagePlan[MultiTurnBatch]:
        methods = self.params.methods or list(METHODS)
        turns = self.params.follow_ups
        follow_ups = self.settings.extensions.multi_turn_user_turns if turns is None else turns
        plan = plan_items(ctx.store, self.settings, methods, follow_ups)
        self.servers = plan.servers
        batches = plan.batches
        # lanes as the trajectories stage has them: a paper-sized plan has ~100k batches, and
        # each batch running holds its rows and its servers' sessions
        concurrency = self.settings.trajectories.concurrency
        lanes = max(1, min(MAX_PARALLEL_BATCHES, concurrency, len(batches)))
        return StagePlan(plan.planned, plan.already_done, batches, parallel=lanes)

    def batch_kwargs(self, ctx: RunContext) -> dict[str, Any]:
        # the stage's concurrency shared by the batches running at once
        concurrency = self.settings.trajectories.concurrency // ctx.plan.running
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
