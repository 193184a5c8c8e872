"""Stage 4, trajectories: kept task x teacher x style -> one agent trajectory with real tools.

The records and pure functions live in tasks/trajectory_records.py; `generate_trajectory` is the unit of work
(one trajectory, plain async); `generate_batch` runs one server group's items concurrently on
its own session pool and model router; `generate_trajectory_batch` is its Prefect task.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NONE

from mcp_env.environment import make_pool
from mcp_env.pool import SessionPool
from mcp_env.specs import parse_server_spec
from tasks.agent import (
    CallJournal,
    CircuitBreaker,
    ServerPaused,
    Teacher,
    Toolbox,
    ToolCaller,
    expose_tools,
    run_agent,
)
from tasks.agent.episode import EpisodeTools, isolated_specs, open_episode_tools
from tasks.agent.naming import ExposedTool
from tasks.agent.server_requests import TrajectoryResponder
from tasks.agent.tool_changes import ToolWatch
from tasks.tool_offer import ToolOffer, define_tool, offer_tools
from tasks.trajectory_records import (
    STAGE,
    BatchOptions,
    BatchResult,
    ServerEntry,
    TrajectoryBatch,
    TrajectoryItem,
    build_trajectory,
    failed_trajectory,
    group_into_batches,
    make_trajectory_id,
    plan_items,
)
from toucan.config import ModelsConfig
from toucan.errors import McpError
from toucan.events import EventSink
from toucan.llm.cache import LlmCache
from toucan.llm.replies import CallMeta, LlmReply
from toucan.llm.router import LlmRouter, build_model_list, price_per_token
from toucan.llm.tool_rules import DEFAULT_RULES, ToolRules, rules_for
from toucan.records import LlmCacheEntry, ToolCallRecord, Trajectory, utc_now

logger = logging.getLogger(__name__)

__all__ = [
    "STAGE",
    "BatchOptions",
    "BatchResult",
    "ServerEntry",
    "TrajectoryBatch",
    "TrajectoryItem",
    "generate_batch",
    "generate_trajectory",
    "generate_trajectory_batch",
    "group_into_batches",
    "make_trajectory_id",
    "plan_items",
]


async def list_exposed_tools(
    pool: SessionPool | EpisodeTools,
    servers: dict[str, ServerEntry],
    server_ids: Sequence[str],
    rules: ToolRules = DEFAULT_RULES,
) -> list[ExposedTool]:
    """The live tools of the task's servers, with names the model's provider accepts."""
    listed = [
        (server_id, servers[server_id].name, await pool.list_tools(server_id))
        for server_id in sorted(set(server_ids))
    ]
    return expose_tools(listed, rules=rules)


async def generate_trajectory(
    item: TrajectoryItem,
    offer: ToolOffer,
    caller: ToolCaller,
    teacher: Teacher,
    options: BatchOptions,
    *,
    breaker: CircuitBreaker | None = None,
    replay: dict[str, dict[str, Any]] | None = None,
    journal: CallJournal | None = None,
    langchain_model: dict[str, Any] | None = None,
    isolated_servers: frozenset[str] = frozenset(),
    catalog: list[ExposedTool] | None = None,
    router: LlmRouter | None = None,
    rules: ToolRules = DEFAULT_RULES,
) -> tuple[Trajectory, list[ToolCallRecord]]:
    """One trajectory, start to stop reason, with the tools of `offer`. Model and tool
    failures end up on the row. `isolated_servers` ran on sessions of this trajectory's own
    (noted on the row). `catalog` is every tool listed (default: the offer's), for following
    tool-list changes (new tools are defined for `rules` like the first offer); with a
    `router`, the servers' sampling and elicitation requests are answered
    (tasks/agent/server_requests.py), else refused by the sessions' fallback."""
    started_at = utc_now()
    meta = CallMeta(
        run_id=options.run_id,
        stage=STAGE,
        item_id=item.trajectory_id,
        server_id=",".join(sorted(set(item.task.server_ids))),
    )
    responder = None
    if router is not None:
        responder = TrajectoryResponder(
            router, item.teacher, meta, options.mcp, item.task.question, teacher=teacher
        )
    toolbox = Toolbox(
        item.trajectory_id,
        offer.tools,
        caller,
        token_budget=options.token_budget,
        call_timeout=options.mcp.call_timeout_s,
        replay=replay,
        journal=journal,
        breaker=breaker,
        run_id=options.run_id,
        restate_servers=isolated_servers,
        responder=responder,
        watch=ToolWatch(
            caller,
            catalog or offer.tools,
            namespaced=len(set(item.task.server_ids)) > 1,
            rules=rules,
            define=lambda tool: define_tool(
                tool, rules, options.models.prompt_budget.description_chars
            ),
        ),
    )
    run = await run_agent(
        item.style,
        item.task.question,
        toolbox,
        teacher,
        item.teacher,
        options.budget,
        meta,
        langchain_model=langchain_model,
    )
    row = build_trajectory(item, run, toolbox, started_at, options.run_id)
    row.metadata["tool_offer"] = offer.record
    if isolated_servers:
        row.metadata["isolated_servers"] = sorted(isolated_servers)
    return row, toolbox.records


class JournalingTeacher:
    """The router, with each new cached reply also appended to the crash journal."""

    def __init__(self, router: LlmRouter, journal: CallJournal | None) -> None:
        self.router = router
        self.journal = journal
        self.new_entries: list[LlmCacheEntry] = []

    async def complete(
        self, target: str, messages: list[dict[str, Any]], **options: Any
    ) -> LlmReply:
        reply = await self.router.complete(target, messages, **options)
        if self.router.cache is not None:
            fresh = self.router.cache.drain_new()
            self.new_entries.extend(fresh)
            for entry in fresh:
                if self.journal is not None:
                    self.journal.append(entry)
        return reply


def langchain_params(
    models: ModelsConfig, local_base_url: str | None, teacher: str
) -> dict[str, Any]:
    """The LiteLLM parameters (and prices, and the row's provenance) LangChain's own model
    client needs."""
    deployment = next(d for d in models.teachers if d.name == teacher)
    for entry in build_model_list(models, local_base_url):
        if entry["model_name"] == teacher:
            params = dict(entry["litellm_params"])
            params["input_cost"], params["output_cost"] = price_per_token(
                deployment, params["model"]
            )
            params["deployment"] = teacher
            params["served_by_embedded"] = models.route_to_local
            return params
    return {}


async def generate_batch(
    batch: TrajectoryBatch,
    servers: dict[str, ServerEntry],
    options: BatchOptions,
    *,
    replay: dict[str, dict[str, Any]] | None = None,
    paused: dict[str, dict[str, str]] | None = None,
    cache_entries: list[LlmCacheEntry] | None = None,
) -> BatchResult:
    """Run one batch on its own pool and router (both bound to this event loop). Servers
    marked `isolation: per_trajectory` also get a short-lived pool per item (tasks/agent/episode.py):
    the batch pool only lists their tools."""
    breaker = CircuitBreaker(threshold=options.breaker_failures)
    for server_id, why in (paused or {}).items():
        breaker.pause(ServerPaused(server_id, why.get("reason", "paused"), why.get("detail", "")))
    journal = open_journal(options, batch.batch_id)
    sink = EventSink(options.run_id, STAGE)
    router = LlmRouter(
        options.models,
        local_base_url=options.local_base_url,
        cache=LlmCache(cache_entries, run_id=options.run_id),
    )
    teacher = JournalingTeacher(router, journal)
    result = BatchResult(batch_id=batch.batch_id)
    limit = asyncio.Semaphore(max(1, options.concurrency))
    try:
        async with make_pool(options.mcp) as pool:
            specs = [parse_server_spec(servers[server_id].spec) for server_id in batch.server_ids]
            for spec in specs:
                pool.register(spec)
                if breaker.paused(spec.server_id) is None:
                    pool.prestart(spec.server_id)

            async def run_item(item: TrajectoryItem) -> None:
                # the item's own sessions stop after its slot is free: a Python server takes
                # 0.4-1.6 s to exit, which the next item need not wait for
                async with contextlib.AsyncExitStack() as own_sessions, limit:
                    paused_any = any(breaker.paused(s) for s in batch.server_ids)
                    own_specs = [] if paused_any else isolated_specs(specs)
                    tools = await own_sessions.enter_async_context(
                        open_episode_tools(pool, own_specs, lambda: make_pool(options.mcp))
                    )
                    row, calls = await run_one(
                        item,
                        batch,
                        servers,
                        tools,
                        teacher,
                        options,
                        breaker,
                        replay or {},
                        journal,
                        sink,
                    )
                result.trajectories.append(row)
                result.tool_calls.extend(calls)
                if journal is not None and row.status == "ok":
                    journal.append(row)

            await asyncio.gather(*(run_item(item) for item in batch.items))
    finally:
        if journal is not None:
            journal.close()
    result.cache_entries = teacher.new_entries
    result.events = [*sink.drain(), *router.drain_events()]
    result.paused = {
        server_id: {"reason": why.reason, "detail": why.detail}
        for server_id, why in breaker.opened.items()
    }
    return result


def open_journal(options: BatchOptions, batch_id: str) -> CallJournal | None:
    if options.journal_dir is None:
        return None
    return CallJournal(Path(options.journal_dir) / f"{options.run_id}-{batch_id}.jsonl")


async def run_one(
    item: TrajectoryItem,
    batch: TrajectoryBatch,
    servers: dict[str, ServerEntry],
    tools: EpisodeTools,
    teacher: JournalingTeacher,
    options: BatchOptions,
    breaker: CircuitBreaker,
    replay: dict[str, dict[str, Any]],
    journal: CallJournal | None,
    sink: EventSink,
) -> tuple[Trajectory, list[ToolCallRecord]]:
    """One item at the stage edge: any failure becomes an error row and an event."""
    server_names = ",".join(servers[s].name for s in batch.server_ids)
    with sink.timed(item_id=item.trajectory_id, server=server_names, model=item.teacher) as out:
        row, calls = await attempt_one(
            item, batch, servers, tools, teacher, options, breaker, replay, journal
        )
        out.update(
            status="ok" if row.status == "ok" else "error",
            error_class=row.reason,
            tokens_in=row.usage.prompt_tokens,
            tokens_out=row.usage.completion_tokens,
            cost_usd=row.cost_usd,
        )
    for entry in row.tool_call_log:
        sink.record(
            kind="tool_call",
            item_id=item.trajectory_id,
            server=entry.server,
            model=item.teacher,
            status="error" if entry.is_error else "ok",
            error_class=entry.error_reason,
            latency_ms=entry.latency_ms,
        )
    record_server_requests(sink, item.trajectory_id, row)
    return row, calls


def record_server_requests(sink: EventSink, item_id: str, row: Trajectory) -> None:
    """One `sampling` / `elicitation` event per server request the row answered anew."""
    for exchange in row.metadata.get("server_requests") or []:
        if exchange.get("replayed"):
            continue
        sink.record(
            kind=exchange["kind"],
            item_id=item_id,
            server=exchange.get("server"),
            model=exchange.get("answered_by"),
            status="error" if exchange.get("error_reason") else "ok",
            error_class=exchange.get("error_reason"),
            latency_ms=exchange.get("latency_ms", 0.0),
            tokens_in=exchange.get("prompt_tokens", 0),
            tokens_out=exchange.get("completion_tokens", 0),
            cost_usd=exchange.get("cost_usd", 0.0),
        )


async def attempt_one(
    item: TrajectoryItem,
    batch: TrajectoryBatch,
    servers: dict[str, ServerEntry],
    tools: EpisodeTools,
    teacher: JournalingTeacher,
    options: BatchOptions,
    breaker: CircuitBreaker,
    replay: dict[str, dict[str, Any]],
    journal: CallJournal | None,
) -> tuple[Trajectory, list[ToolCallRecord]]:
    for server_id in batch.server_ids:
        if why := breaker.paused(server_id):
            return failed_trajectory(
                item,
                "server_paused",
                f"{servers[server_id].name}: {why.reason}: {why.detail}",
                options.run_id,
            ), []
    rules = rules_for(options.models, item.teacher)
    try:
        exposed = await list_exposed_tools(tools, servers, batch.server_ids, rules)
    except McpError as error:
        for server_id in batch.server_ids:
            if tools.dead_reason(server_id) is not None or len(batch.server_ids) == 1:
                breaker.record_failure(server_id, error.reason, str(error))
        return failed_trajectory(item, error.reason, str(error), options.run_id), []
    # the offer (targets + others, within the provider's rules and the budget) is what the
    # model sees and the row records
    offer = offer_tools(
        exposed, item.task.target_tools, options.models.prompt_budget, item.trajectory_id, rules
    )
    try:
        params = None
        if item.style == "langchain":
            params = langchain_params(options.models, options.local_base_url, item.teacher)
        return await generate_trajectory(
            item,
            offer,
            tools,
            teacher,
            options,
            breaker=breaker,
            replay=replay,
            journal=journal,
            langchain_model=params,
            isolated_servers=tools.own_ids,
            catalog=exposed,
            router=teacher.router,
        )
    except Exception as error:  # the stage edge: one broken item must not sink the batch
        logger.exception("trajectory %s failed", item.trajectory_id)
        return failed_trajectory(item, "internal_error", repr(error), options.run_id), []


@task(name="trajectories-batch", persist_result=False, cache_policy=NONE, retries=0)
async def generate_trajectory_batch(
    batch: TrajectoryBatch,
    servers: dict[str, ServerEntry],
    options: BatchOptions,
    replay: dict[str, dict[str, Any]] | None = None,
    paused: dict[str, dict[str, str]] | None = None,
    cache_entries: list[LlmCacheEntry] | None = None,
) -> BatchResult:
    """Prefect task over one server group's batch; returns records, never writes the store."""
    return await generate_batch(
        batch, servers, options, replay=replay, paused=paused, cache_entries=cache_entries
    )
