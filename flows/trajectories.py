"""Stage 4: kept tasks x teachers x styles -> trajectories with real tool calls.

Picks the items with no finished trajectory, batches them by server group, shares one server
circuit breaker among the run's batches (and carries the servers paused by finished batches
into the next ones, for batches on other processes), and resumes a killed run by ingesting
its crash journals and replaying their tool results.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from flows.queries import select_teacher_tasks, split_unfinished, trajectory_scopes
from flows.runner import RunContext, StageJob, StagePlan, StageSummary
from flows.writes import count_attempts, write_agent_output
from tasks import trajectory_records as traj
from tasks.agent import AgentBudget, journal_dir, read_journals
from tasks.agent.batch import BatchOptions, BatchResult, ServerEntry
from tasks.agent.breaker import ServerBreaker
from tasks.trajectories import generate_batch
from toucan.config import Settings, check_names
from toucan.records import LlmCacheEntry, Server, ToolCallRecord, Trajectory
from toucan.store import Store

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


class Plan(BaseModel):
    items: list[traj.TrajectoryItem]
    batches: list[traj.TrajectoryBatch]
    servers: dict[str, ServerEntry]
    already_done: int
    per_batch_concurrency: int
    parallel_batches: int  # batches running at once: never more than `concurrency` items


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
        for t in select_teacher_tasks(store)
        if t.server_ids and all(sid in servers for sid in t.server_ids)
    ]
    items = traj.plan_items(tasks, teachers, styles)
    # the rule every stage resumes by (flows/queries.py): no row, or a retryable error row
    tries = settings.retries.max_attempts
    pending, already_done = split_unfinished(
        store, Trajectory, items, lambda i: i.trajectory_id, tries
    )
    if limit is not None:
        pending = pending[: max(0, limit)]
    concurrency = settings.trajectories.concurrency
    lanes = max(1, min(MAX_PARALLEL_BATCHES, concurrency))
    # a scout is one wave of a lane: its items all in flight at once
    scout = max(1, concurrency // lanes)
    batches = traj.group_into_batches(pending, max(MIN_BATCH_ITEMS, concurrency), lanes, scout)
    running = max(1, min(lanes, len(batches)))
    return Plan(
        items=pending,
        batches=batches,
        servers=servers,
        already_done=already_done,
        per_batch_concurrency=max(1, concurrency // running),
        parallel_batches=running,
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
        self.replay = load_replay(ctx.store, [i.trajectory_id for i in work.items])
        self.work = work
        return StagePlan(
            len(work.items),
            work.already_done,
            work.batches,
            work.parallel_batches,
            work.per_batch_concurrency,
        )

    def batch_kwargs(self, ctx: RunContext) -> dict[str, Any]:
        options = agent_options(ctx, ctx.plan.per_batch)
        options.journal_dir = str(journal_dir(ctx.store.path))
        cache = load_cache_entries(ctx.store, self.settings, self.chosen)
        return {
            "servers": self.work.servers,
            "options": options,
            "cache_entries": cache,
            "breaker": self.breaker,
        }

    def batch_args(self, batch: traj.TrajectoryBatch) -> dict[str, Any]:
        replay: dict[str, dict[str, Any]] = {}
        for item in batch.items:
            replay.update(self.replay.get(item.trajectory_id, {}))
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
