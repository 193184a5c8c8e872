"""One batch of agent items (trajectories, multi-turn conversations) on shared live servers.

`run_agent_batch` opens what the items of one server group share, all bound to the batch's own
event loop (a Prefect task's or the caller's, never crossing threads or processes): the session
pool with the group's servers registered and started, the model router over a fork of the run's
reply cache (stored replies looked up by key prefix, toucan/llm/cache.py), the circuit breaker
(carrying servers paused by earlier batches), the crash journal. It runs the stage's per-item
coroutine with at most `options.concurrency` items in flight, and records each item's events:
the item itself, its tool calls and the server requests answered during them. The stage's
coroutine decides what one item does and turns its failures into rows.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

from mcp_env.environment import make_pool
from mcp_env.pool import SessionPool
from mcp_env.results import ListedTool
from mcp_env.server_requests import ServerExchange
from mcp_env.session import AnySpec
from mcp_env.specs import parse_server_spec
from tasks.agent.breaker import ServerBreaker, ServerPaused
from tasks.agent.journal import CallJournal, JournalingTeacher, open_journal
from tasks.agent.loop import AgentBudget
from tasks.agent.naming import ExposedTool, expose_tools
from tasks.agent.toolbox import Toolbox
from toucan.config import LimitsConfig, McpConfig, ModelsConfig
from toucan.events import EventSink, joined_servers
from toucan.ids import make_id
from toucan.llm.breaker import ModelBreaker
from toucan.llm.budget import Budget
from toucan.llm.cache import LlmCache
from toucan.llm.replies import CallMeta
from toucan.llm.router import LlmRouter
from toucan.llm.tool_rules import DEFAULT_RULES, ToolRules
from toucan.records import Event, LlmCacheEntry, Task, ToolCallRecord, Trajectory


class ServerEntry(BaseModel):
    """A usable server as a batch needs it: its id, name and spec (the stored spec, parsed
    by `parse_server_spec`; ValidationError for one that does not parse)."""

    server_id: str
    name: str
    spec: AnySpec

    _parse_spec = field_validator("spec", mode="before")(
        lambda raw: parse_server_spec(raw) if isinstance(raw, dict) else raw
    )


class BatchOptions(BaseModel):
    """What every item of an agent batch runs under (from the stage's settings), and the
    run's model guards its router shares with the other batches (None: uncapped, and a
    breaker of the batch's own)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    budget: AgentBudget = Field(default_factory=AgentBudget)
    token_budget: int = 2_000  # tokens of a tool result the model sees
    concurrency: int = 32  # items in flight in this batch
    breaker_failures: int = 5
    mcp: McpConfig = Field(default_factory=McpConfig)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)  # on the tools servers list
    models: ModelsConfig
    local_base_url: str | None = None
    run_id: str = "adhoc"
    journal_dir: str | None = None  # None: no crash journal
    spend_budget: Budget | None = None  # `budget` is the agent loop's turns and wall clock
    model_breaker: ModelBreaker | None = None


class BatchResult(BaseModel):
    """What a batch hands back; the flow writes it (it is the single writer)."""

    batch_id: str
    trajectories: list[Trajectory] = Field(default_factory=list)
    tool_calls: list[ToolCallRecord] = Field(default_factory=list)
    cache_entries: list[LlmCacheEntry] = Field(default_factory=list)
    events: list[Event] = Field(default_factory=list)
    # server_id -> {"reason", "detail"}: the servers the circuit breaker paused
    paused: dict[str, dict[str, str]] = Field(default_factory=dict)


class ToolLister(Protocol):
    """What lists a server's tools: the batch's pool, or one item's sessions."""

    async def list_tools(self, server_id: str) -> list[ListedTool]: ...


class AgentItem(Protocol):
    """An item of an agent batch: one row to make, for one task, with one teacher."""

    trajectory_id: str
    task: Task
    teacher: str


class AgentBatch(BaseModel):
    """Items sharing one exact set of servers (subclasses type `items`)."""

    batch_id: str
    server_ids: list[str]
    items: Sequence[Any]

    def __len__(self) -> int:
        """Items in the batch (what the runner counts as not started when it skips one)."""
        return len(self.items)


def item_meta(item: AgentItem, run_id: str, stage: str) -> CallMeta:
    """Who asks, on each model call an item makes: its run, stage, row id and servers."""
    return CallMeta(
        run_id=run_id,
        stage=stage,
        item_id=item.trajectory_id,
        server_id=",".join(sorted(set(item.task.server_ids))),
    )


ItemT = TypeVar("ItemT", bound=AgentItem)
BatchT = TypeVar("BatchT", bound=AgentBatch)


def group_by_servers(
    items: Sequence[ItemT],
    size: int,
    batch_type: type[BatchT],
    id_prefix: str,
    *,
    lanes: int | None = None,
    scout_size: int = 1,
) -> list[BatchT]:
    """Items grouped by their task's exact server set, then cut into chunks of `size`; the
    batch id is a hash of the servers and the items' ids.

    With more server groups than `lanes` (batches running at once), some groups would not be
    called until others finished, and a server that hangs would then cost its call timeout
    after the healthy work, at the run's end (issue 15, fault 6). So each group's first
    chunk is a scout of at most `scout_size` items (one wave of a batch), and every scout is
    ordered before the rest: every server is called in the run's first waves, and one that
    hangs is found and paused (tasks/agent/breaker.py) while the others still have work."""
    groups: dict[tuple[str, ...], list[ItemT]] = {}
    for item in items:
        groups.setdefault(tuple(sorted(set(item.task.server_ids))), []).append(item)
    sizes = {server_ids: len(group) for server_ids, group in groups.items()}
    return [
        make_agent_batch(batch_type, id_prefix, server_ids, groups[server_ids][start:end])
        for server_ids, start, end in batch_layout(sizes, size, lanes=lanes, scout_size=scout_size)
    ]


def batch_layout(
    sizes: dict[tuple[str, ...], int], size: int, *, lanes: int | None, scout_size: int
) -> list[tuple[tuple[str, ...], int, int]]:
    """(server group, start, end) of each batch `group_by_servers` makes of groups of these
    sizes (items, each > 0), in run order: a group's batches cut it in order, its scout first.
    Known from the counts alone, so a streamed plan makes the same batches."""
    scouting = lanes is not None and len(sizes) > lanes
    first: list[tuple[tuple[str, ...], int, int]] = []
    rest: list[tuple[tuple[str, ...], int, int]] = []
    for server_ids, count in sorted(sizes.items()):
        head = min(count, max(1, scout_size)) if scouting else 0
        starts = ([0] if head else []) + list(range(head, count, max(1, size)))
        for n, (start, end) in enumerate(zip(starts, [*starts[1:], count], strict=True)):
            (first if n == 0 else rest).append((server_ids, start, end))
    return first + rest


def make_agent_batch(
    batch_type: type[BatchT], id_prefix: str, server_ids: Sequence[str], items: Sequence[ItemT]
) -> BatchT:
    """A batch of `items` on `server_ids`; its id is a hash of the servers and the items' ids."""
    batch_id = make_id(id_prefix, tuple(server_ids), [i.trajectory_id for i in items])
    return batch_type(batch_id=batch_id, server_ids=list(server_ids), items=items)


async def list_exposed_tools(
    pool: ToolLister,
    servers: dict[str, ServerEntry],
    server_ids: Sequence[str],
    rules: ToolRules = DEFAULT_RULES,
) -> list[ExposedTool]:
    """The live tools of the given servers, with names the model's provider accepts (`rules`).
    Raises the pool's McpError when a server cannot list its tools."""
    listed = [
        (server_id, servers[server_id].name, await pool.list_tools(server_id))
        for server_id in sorted(set(server_ids))
    ]
    return expose_tools(listed, rules=rules)


@dataclass
class BatchContext:
    """What a batch's items share; handed to the stage's per-item coroutine."""

    batch: AgentBatch
    servers: dict[str, ServerEntry]
    specs: list[AnySpec]  # the batch's servers, registered in `pool`
    options: BatchOptions
    pool: SessionPool
    teacher: JournalingTeacher  # the router (`teacher.router`), journaling new replies
    breaker: ServerBreaker  # the run's, shared with its other batches
    journal: CallJournal | None

    @property
    def server_names(self) -> str:
        return joined_servers(self.servers[s].name for s in self.batch.server_ids) or ""


@dataclass
class ItemOutcome:
    """What one item made: its row, and the toolbox that ran its calls (None when it never
    got that far); the calls' records and events come from the toolbox."""

    row: Trajectory
    toolbox: Toolbox | None = None


# (item, batch context, exit stack closed after the item's slot is free) -> its outcome;
# never raises for one item's failure (that is an error row)
RunItem = Callable[[Any, BatchContext, contextlib.AsyncExitStack], Awaitable[ItemOutcome]]


def open_breaker(
    options: BatchOptions,
    paused: dict[str, dict[str, str]] | None,
    breaker: ServerBreaker | None = None,
) -> ServerBreaker:
    """The run's server breaker (a new one when the batch runs alone), holding the servers
    earlier batches paused ({"reason", "detail"}): on a process of its own (Dask) the run's
    breaker is a copy, and these are all it learns of the others."""
    breaker = breaker if breaker is not None else ServerBreaker(options.breaker_failures)
    for server_id, why in (paused or {}).items():
        breaker.pause(ServerPaused(server_id, why.get("reason", "paused"), why.get("detail", "")))
    return breaker


async def run_agent_batch(
    batch: AgentBatch,
    servers: dict[str, ServerEntry],
    options: BatchOptions,
    stage: str,
    run_item: RunItem,
    *,
    cache: LlmCache | None = None,
    paused: dict[str, dict[str, str]] | None = None,
    breaker: ServerBreaker | None = None,
) -> BatchResult:
    """Run every item of `batch` with `run_item`; returns the rows, tool-call records, new
    cache entries, events and the batch's servers that are paused. Never writes the store.
    `cache` is the run's reply cache over the store (None: an empty one); the batch answers
    from a fork of it, so the new entries it returns are those of its own calls. `breaker` is
    the run's, shared by its batches (None: one of the batch's own)."""
    breaker = open_breaker(options, paused, breaker)
    journal = open_journal(options.journal_dir, options.run_id, batch.batch_id)
    sink = EventSink(options.run_id, stage)
    router = LlmRouter(
        options.models,
        local_base_url=options.local_base_url,
        cache=cache.fork() if cache is not None else LlmCache(run_id=options.run_id),
        budget=options.spend_budget,
        breaker=options.model_breaker,
    )
    teacher = JournalingTeacher(router, journal)
    result = BatchResult(batch_id=batch.batch_id)
    limit = asyncio.Semaphore(max(1, options.concurrency))
    try:
        async with make_pool(options.mcp, limits=options.limits) as pool:
            specs = [servers[server_id].spec for server_id in batch.server_ids]
            for spec in specs:
                pool.register(spec)
                if breaker.paused(spec.server_id) is None:
                    pool.prestart(spec.server_id)
            ctx = BatchContext(batch, servers, specs, options, pool, teacher, breaker, journal)

            async def run_one(item: AgentItem) -> None:
                # what the item leaves on `lingering` (its own sessions) closes after its slot
                # is free: a Python server takes 0.4-1.6 s to exit, which the next item need
                # not wait for
                async with contextlib.AsyncExitStack() as lingering, limit:
                    with sink.timed(
                        item_id=item.trajectory_id, server=ctx.server_names, model=item.teacher
                    ) as out:
                        outcome = await run_item(item, ctx, lingering)
                        out.update(item_event(outcome.row))
                keep_outcome(result, outcome, options.run_id, journal)
                record_calls(sink, item, outcome)

            await asyncio.gather(*(run_one(item) for item in batch.items))
    finally:
        if journal is not None:
            journal.close()
        await router.aclose()  # its HTTP session belongs to this loop, which may outlive us
    result.cache_entries = list(teacher.collect())
    result.events = [*sink.drain(), *router.drain_events()]
    result.paused = {
        server_id: {"reason": why.reason, "detail": why.detail}
        for server_id in batch.server_ids
        if (why := breaker.paused(server_id)) is not None
    }
    return result


def item_event(row: Trajectory) -> dict[str, Any]:
    """The item event's outcome fields, from the row."""
    return {
        "status": "ok" if row.status == "ok" else "error",
        "error_class": row.reason,
        "tokens_in": row.usage.prompt_tokens,
        "tokens_out": row.usage.completion_tokens,
        "cost_usd": row.cost_usd,
    }


def keep_outcome(
    result: BatchResult, outcome: ItemOutcome, run_id: str, journal: CallJournal | None
) -> None:
    row = outcome.row
    row.run_id = run_id
    result.trajectories.append(row)
    if outcome.toolbox is not None:
        result.tool_calls.extend(outcome.toolbox.records)
    if journal is not None and row.status == "ok":
        journal.append(row)


def record_calls(sink: EventSink, item: AgentItem, outcome: ItemOutcome) -> None:
    """One `tool_call` event per call the item made, and one `sampling` / `elicitation` event
    per server request it answered anew (a replayed answer cost nothing this time)."""
    toolbox = outcome.toolbox
    if toolbox is None:
        return
    for entry in toolbox.log:
        sink.record(
            kind="tool_call",
            item_id=item.trajectory_id,
            server=entry.server,
            model=item.teacher,
            status="error" if entry.is_error else "ok",
            error_class=entry.error_reason,
            latency_ms=entry.latency_ms,
        )
    exchanges = toolbox.responder.exchanges if toolbox.responder is not None else []
    for exchange in exchanges:
        if not exchange.replayed:
            sink.record(item_id=item.trajectory_id, **exchange_event(exchange))


def exchange_event(exchange: ServerExchange) -> dict[str, Any]:
    """The event fields of one server request: who answered, how, and what it cost."""
    return {
        "kind": exchange.kind,
        "server": exchange.server,
        "model": exchange.answered_by,
        "status": "error" if exchange.error_reason else "ok",
        "error_class": exchange.error_reason,
        "latency_ms": exchange.latency_ms,
        "tokens_in": exchange.prompt_tokens,
        "tokens_out": exchange.completion_tokens,
        "cost_usd": exchange.cost_usd,
    }
