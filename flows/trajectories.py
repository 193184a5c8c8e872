"""Stage 4: kept tasks x teachers x styles -> trajectories with real tool calls.

Picks the items with no finished trajectory, batches them by server group, shares one server
circuit breaker among the run's batches (and carries the servers paused by finished batches
into the next ones, for batches on other processes), and resumes a killed run by ingesting
its crash journals and replaying their tool results.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

from pydantic import BaseModel, Field

from flows.queries import (
    CHECK_IDS,
    select_walked,
    trajectory_scopes,
    unfinished_ids,
    walk_teacher_tasks,
)
from flows.run_context import Stream
from flows.runner import RunContext, StageJob, StagePlan, StageSummary
from flows.writes import count_attempts, write_agent_output
from tasks import trajectory_records as traj
from tasks.agent import AgentBudget, journal_dir, read_journals
from tasks.agent.batch import BatchOptions, BatchResult, ServerEntry, batch_layout, make_agent_batch
from tasks.agent.breaker import ServerBreaker
from tasks.agent.styles import check_styles
from tasks.llm_batch import chunked
from tasks.trajectories import generate_batch
from toucan.config import Settings, check_names
from toucan.llm.cache import LlmCache
from toucan.records import Server, Task, ToolCallRecord, Trajectory
from toucan.store import Store, among

# server groups running at once; their items share `concurrency`. 16, not 8: with 10 groups
# and 8 lanes, a hanging server's batch held a lane for a call timeout while the healthy
# groups' batches could not spread onto the others (bench_hanging: 1.70x -> 1.23x, issue 15)
MAX_PARALLEL_BATCHES = 16
MIN_BATCH_ITEMS = 8


class Tally(BaseModel):
    done: int = Field(0, description="trajectories that ended ok")
    failed: int = 0
    tool_calls: int = 0
    tool_errors: int = 0
    tokens: int = Field(0, description="prompt + completion tokens of the teacher")
    cost_usd: float = 0.0

    @classmethod
    def of(cls, cells: dict[str, Any]) -> Tally:
        return cls(**{**cells, "cost_usd": round(cells.get("cost_usd", 0.0), 6)})


class TrajectoriesSummary(StageSummary):
    planned: int = Field(0, description="items this run set out to do")
    already_done: int = 0
    total: Tally = Field(default_factory=Tally)
    per_teacher: dict[str, Tally] = Field(default_factory=dict)
    per_server: dict[str, Tally] = Field(default_factory=dict, description="by server offered")
    stop_reasons: dict[str, int] = Field(default_factory=dict)
    paused_servers: dict[str, dict[str, str]] = Field(default_factory=dict)
    replayed_tool_calls: int = 0


@dataclass
class ServerGroup:
    """The teacher tasks on one exact set of servers: their ids in id order, and one mark
    per (task, teacher, style) item in plan order (1: this run does it)."""

    task_ids: list[str] = field(default_factory=list)
    todo: bytearray = field(default_factory=bytearray)

    def pending(self, per_task: int) -> Iterator[tuple[str, int]]:
        """(task id, index of the teacher and style) of each item to do, in plan order."""
        for position, mark in enumerate(self.todo):
            if mark:
                yield self.task_ids[position // per_task], position % per_task


@dataclass
class Plan:
    """The items still to do and their batches, streamed: what is held is a task id per
    teacher task and a byte per item; a batch's tasks are read when it is made."""

    items: Stream[traj.TrajectoryItem]
    batches: Stream[traj.TrajectoryBatch]
    servers: dict[str, ServerEntry]
    already_done: int
    per_batch_concurrency: int
    parallel_batches: int  # batches running at once: never more than `concurrency` items
    largest_batch: int  # items


def resolve_teachers(settings: Settings, requested: list[str] | None) -> list[str]:
    configured = [d.name for d in settings.models.teachers]
    chosen = requested or settings.trajectories.teachers or configured
    return check_names(chosen, configured, "teacher", "unknown_teacher")


def usable_servers(store: Store) -> dict[str, ServerEntry]:
    """Server id -> what an agent stage needs to start it, for the servers onboarded ok."""
    return {
        s.server_id: ServerEntry(server_id=s.server_id, name=s.name, spec=s.spec)
        for s in store.select(Server, "status = 'ok'")
    }


def plan_work(
    store: Store, settings: Settings, teachers: list[str], styles: list[str], limit: int | None
) -> Plan:
    """The items still to do (no finished row), batched by server group: the batches of
    `traj.group_into_batches` over `traj.plan_items` of the usable teacher tasks (every
    server ok), made as the stream is consumed. Raises ConfigError (`unknown_agent_style`)."""
    servers = usable_servers(store)
    combos = [(teacher, style) for teacher in teachers for style in check_styles(styles)]
    per_task = len(combos)
    groups: dict[tuple[str, ...], ServerGroup] = {}
    # the rule every stage resumes by (flows/queries.py): no row, or a retryable error row
    tries = settings.retries.max_attempts
    room = limit if limit is None else max(0, limit)
    already_done = 0
    usable = (
        (task_id, server_ids)
        for task_id, server_ids in walk_teacher_tasks(store)
        if server_ids and all(sid in servers for sid in server_ids)
    )
    for chunk in chunked(usable, max(1, CHECK_IDS // max(1, per_task))):
        ids = [traj.make_trajectory_id(t, *combo) for t, _ in chunk for combo in combos]
        todo_ids = unfinished_ids(store, Trajectory, ids, tries)
        already_done += len(ids) - len(todo_ids)
        for n, (task_id, server_ids) in enumerate(chunk):
            group = groups.setdefault(tuple(sorted(set(server_ids))), ServerGroup())
            group.task_ids.append(task_id)
            for row_id in ids[n * per_task : (n + 1) * per_task]:
                take = row_id in todo_ids and (room is None or room > 0)
                group.todo.append(take)
                room = room - take if room is not None else None
    sizes = {key: count for key, group in groups.items() if (count := group.todo.count(1))}
    concurrency = settings.trajectories.concurrency
    lanes = max(1, min(MAX_PARALLEL_BATCHES, concurrency))
    # a scout is one wave of a lane: its items all in flight at once
    scout = max(1, concurrency // lanes)
    size = max(MIN_BATCH_ITEMS, concurrency)
    layout = batch_layout(sizes, size, lanes=lanes, scout_size=scout)

    def batches() -> Iterator[traj.TrajectoryBatch]:
        walks = {key: groups[key].pending(per_task) for key in sizes}
        for key, start, end in layout:
            chosen = list(islice(walks[key], end - start))
            task_ids = list(dict.fromkeys(task_id for task_id, _ in chosen))
            rows = select_walked(store, Task, "task_id", [(t, t) for t in task_ids])
            tasks = {t.task_id: t for t in rows}
            items = [
                traj.TrajectoryItem(
                    trajectory_id=traj.make_trajectory_id(task_id, *combos[k]),
                    task=tasks[task_id],
                    teacher=combos[k][0],
                    style=combos[k][1],
                )
                for task_id, k in chosen
            ]
            yield make_agent_batch(traj.TrajectoryBatch, "batch", key, items)

    planned = sum(sizes.values())
    running = max(1, min(lanes, len(layout)))
    return Plan(
        items=Stream(planned, lambda: (item for batch in batches() for item in batch.items)),
        batches=Stream(len(layout), batches),
        servers=servers,
        already_done=already_done,
        per_batch_concurrency=max(1, concurrency // running),
        parallel_batches=running,
        largest_batch=max((end - start for _, start, end in layout), default=0),
    )


def ingest_journals(store: Store) -> int:
    """Write what a killed run journaled (tool calls, model replies) and drop the files."""
    records, files = read_journals(journal_dir(store.path))
    finished = [r for r in records if isinstance(r, Trajectory)]
    # newer than any error row of that id: the killed run's try, counted
    added = store.upsert(count_attempts(store, finished)) if finished else 0
    others = [r for r in records if not isinstance(r, Trajectory)]
    added += store.insert(others) if others else 0
    for path in files:
        path.unlink(missing_ok=True)
    return added


def load_replay(store: Store, trajectory_ids: list[str]) -> dict[str, dict[str, dict[str, Any]]]:
    """trajectory id -> {call key -> result} of tool calls made before an interruption."""
    if not trajectory_ids or not store.count(ToolCallRecord):
        return {}
    rows = store.select(ToolCallRecord, among("trajectory_id"), [trajectory_ids])
    replay: dict[str, dict[str, dict[str, Any]]] = {}
    for row in rows:
        replay.setdefault(row.trajectory_id or "", {})[row.call_key] = row.result
    return replay


def teacher_models(settings: Settings, teachers: list[str]) -> list[str]:
    """The LiteLLM model strings of these teachers, as their replies are stored: a
    deployment's `model`, or `openai/<name>` when routed to the embedded model."""
    if settings.models.route_to_local:
        return [f"openai/{d.name}" for d in settings.models.teachers if d.name in teachers]
    return [d.model for d in settings.models.teachers if d.name in teachers]


def agent_cache(ctx: RunContext, models: list[str] | None = None) -> LlmCache:
    """The run's reply cache for agent batches (trajectories, multi-turn): the 64-bit key
    prefixes of the stored replies of these LiteLLM model strings (all when None), a reply
    fetched from the store on a prefix match (toucan/llm/cache.py). Each batch answers from a
    fork of it, in this process or pickled to a worker, which reads the store's file
    read-only, waiting while the flow run holds it; the stored replies never ride along."""
    return LlmCache.load(ctx.store, ctx.run_id, models)


def agent_options(ctx: RunContext, concurrency: int) -> BatchOptions:
    """Options of an agent batch (trajectories, multi-turn): budgets from the `trajectories`
    section, `concurrency` items in flight, limits shared by the batches running at once, the
    embedded model's url, the run's model guards."""
    settings = ctx.settings
    section = settings.trajectories
    return BatchOptions(
        budget=AgentBudget(max_turns=section.max_turns, wall_clock_s=section.wall_clock_s),
        token_budget=section.tool_result_token_budget,
        concurrency=concurrency,
        breaker_failures=settings.mcp.circuit_breaker_failures,
        mcp=settings.mcp,
        limits=settings.limits,
        models=settings.models.shared_by(ctx.plan.running),
        local_base_url=ctx.local_base_url,
        run_id=ctx.run_id,
        spend_budget=ctx.guards.budget if ctx.guards else None,
        model_breaker=ctx.guards.breaker if ctx.guards else None,
    )


def count_trajectory(ctx: RunContext, row: Trajectory) -> None:
    """One finished trajectory into the totals, per teacher and per offered server."""
    ctx.tally.item(row.status, row.reason)
    cells = {
        "done" if row.status == "ok" else "failed": 1,
        "tool_calls": row.tool_calls,
        "tool_errors": row.tool_errors,
        "tokens": row.usage.total_tokens,
        "cost_usd": row.cost_usd,
    }
    for table, key in trajectory_scopes(row):
        ctx.tally.add_cells(table, key, cells)
    ctx.tally.add("stop_reasons", row.stop_reason)
    ctx.tally.add("replayed", "", int(row.metadata.get("replayed_tool_calls", 0)))


class TrajectoriesJob(StageJob[traj.TrajectoryBatch]):
    """Runs the unfinished (task, teacher, style) items, one batch per server group."""

    name = traj.STAGE
    batch_fn = generate_batch
    needs_model = True

    def plan(self, ctx: RunContext) -> StagePlan[traj.TrajectoryBatch]:
        ingest_journals(ctx.store)
        self.paused: dict[str, dict[str, str]] = {}  # server name -> why, from finished batches
        # one for the run: a server's failures add up across batches (threads share it)
        self.breaker = ServerBreaker(self.settings.mcp.circuit_breaker_failures)
        self.chosen = resolve_teachers(self.settings, self.params.teachers)
        styles = self.params.styles or list(self.settings.trajectories.styles)
        work = plan_work(ctx.store, self.settings, self.chosen, styles, self.params.limit)
        self.store = ctx.store
        self.work = work
        return StagePlan(
            len(work.items),
            work.already_done,
            work.batches,
            work.parallel_batches,
            work.per_batch_concurrency,
            work.largest_batch,
        )

    def batch_kwargs(self, ctx: RunContext) -> dict[str, Any]:
        options = agent_options(ctx, ctx.plan.per_batch)
        options.journal_dir = str(journal_dir(ctx.store.path))
        return {
            "servers": self.work.servers,
            "options": options,
            "cache": agent_cache(ctx, teacher_models(self.settings, self.chosen)),
            "breaker": self.breaker,
        }

    def batch_args(self, batch: traj.TrajectoryBatch) -> dict[str, Any]:
        # the tool results its items got before an interruption, read as the batch starts
        replay: dict[str, dict[str, Any]] = {}
        for calls in load_replay(self.store, [i.trajectory_id for i in batch.items]).values():
            replay.update(calls)
        by_name = {entry.name: sid for sid, entry in self.work.servers.items()}
        paused = {by_name.get(name, name): why for name, why in self.paused.items()}
        return {"replay": replay, "paused": paused}

    def write(self, ctx: RunContext, output: BatchResult) -> None:
        """Store one finished batch, count it, drop its crash journal."""
        write_agent_output(ctx, output)
        (journal_dir(ctx.store.path) / f"{ctx.run_id}-{output.batch_id}.jsonl").unlink(
            missing_ok=True
        )
        for row in output.trajectories:
            count_trajectory(ctx, row)
        servers = self.work.servers
        for sid, why in output.paused.items():
            self.paused[servers[sid].name if sid in servers else sid] = why

    def summarise(self, ctx: RunContext) -> BaseModel:
        tally = ctx.tally
        return TrajectoriesSummary.of(
            ctx,
            planned=ctx.plan.planned,
            total=Tally.of(tally.table("total").get("", {})),
            per_teacher={k: Tally.of(v) for k, v in tally.table("teacher").items()},
            per_server={k: Tally.of(v) for k, v in tally.table("server").items()},
            stop_reasons=tally.counts("stop_reasons"),
            paused_servers=self.paused,
            replayed_tool_calls=tally.total("replayed"),
        )
