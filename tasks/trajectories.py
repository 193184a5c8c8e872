"""Stage 4, trajectories: kept task x teacher x style -> one agent trajectory with real tools.

The records and pure functions live in tasks/trajectory_records.py; `generate_trajectory` is
the unit of work (one trajectory, plain async); `generate_batch` runs one server group's items
on the shared agent batch runner (tasks/agent/batch.py); the stage runner fans it out.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from mcp_env.environment import make_pool
from tasks.agent import CallJournal, ServerBreaker, Teacher, Toolbox, ToolCaller, run_agent
from tasks.agent.batch import (
    BatchContext,
    BatchOptions,
    BatchResult,
    ItemOutcome,
    ServerEntry,
    item_meta,
    list_exposed_tools,
    run_agent_batch,
)
from tasks.agent.episode import isolated_specs, open_episode_tools
from tasks.agent.loop import AgentJob
from tasks.agent.naming import ExposedTool
from tasks.agent.server_requests import TrajectoryResponder
from tasks.agent.tool_changes import ToolWatch
from tasks.tool_offer import ToolOffer, define_tool, offer_tools
from tasks.trajectory_records import (
    STAGE,
    TrajectoryBatch,
    TrajectoryItem,
    build_trajectory,
    failed_trajectory,
    group_into_batches,
    make_trajectory_id,
    plan_items,
)
from toucan.errors import McpError
from toucan.llm.cache import LlmCache
from toucan.llm.router import LlmRouter
from toucan.llm.tool_rules import DEFAULT_RULES, ToolRules, rules_for
from toucan.records import utc_now

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
    "group_into_batches",
    "make_trajectory_id",
    "plan_items",
]


async def generate_trajectory(
    item: TrajectoryItem,
    offer: ToolOffer,
    caller: ToolCaller,
    teacher: Teacher,
    options: BatchOptions,
    *,
    breaker: ServerBreaker | None = None,
    replay: dict[str, dict[str, Any]] | None = None,
    journal: CallJournal | None = None,
    isolated_servers: frozenset[str] = frozenset(),
    catalog: list[ExposedTool] | None = None,
    router: LlmRouter | None = None,
    rules: ToolRules = DEFAULT_RULES,
) -> ItemOutcome:
    """One trajectory, start to stop reason, with the tools of `offer`. Model and tool
    failures end up on the row. `isolated_servers` ran on sessions of this trajectory's own
    (noted on the row). `catalog` is every tool listed (default: the offer's), for following
    tool-list changes (new tools are defined for `rules` like the first offer); with a
    `router`, the servers' sampling and elicitation requests are answered
    (tasks/agent/server_requests.py), else refused by the sessions' fallback."""
    started_at = utc_now()
    meta = item_meta(item, options.run_id, STAGE)
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
    job = AgentJob(
        question=item.task.question,
        toolbox=toolbox,
        teacher=teacher,
        target=item.teacher,
        budget=options.budget,
        meta=meta,
        models=options.models,
        local_base_url=options.local_base_url,
    )
    run = await run_agent(item.style, job)
    row = build_trajectory(item, run, toolbox, started_at, options.run_id)
    row.metadata["tool_offer"] = offer.record.model_dump()
    if isolated_servers:
        row.metadata["isolated_servers"] = sorted(isolated_servers)
    return ItemOutcome(row, toolbox)


async def generate_batch(
    batch: TrajectoryBatch,
    servers: dict[str, ServerEntry],
    options: BatchOptions,
    *,
    replay: dict[str, dict[str, Any]] | None = None,
    paused: dict[str, dict[str, str]] | None = None,
    cache: LlmCache | None = None,
    breaker: ServerBreaker | None = None,
) -> BatchResult:
    """Run one server group's items on the agent batch runner. Servers marked
    `isolation: per_trajectory` also get a short-lived pool per item (tasks/agent/episode.py):
    the batch pool only lists their tools. `replay`: call key -> recorded result; `breaker`:
    the run's server breaker, shared by its batches."""
    recorded = replay or {}

    async def run_item(
        item: TrajectoryItem, ctx: BatchContext, lingering: contextlib.AsyncExitStack
    ) -> ItemOutcome:
        return await trajectory_item(item, ctx, lingering, recorded)

    return await run_agent_batch(
        batch,
        servers,
        options,
        STAGE,
        run_item,
        cache=cache,
        paused=paused,
        breaker=breaker,
    )


async def trajectory_item(
    item: TrajectoryItem,
    ctx: BatchContext,
    lingering: contextlib.AsyncExitStack,
    replay: dict[str, dict[str, Any]],
) -> ItemOutcome:
    """One item at the stage edge: a paused server, a failed listing or any other failure
    becomes an error row."""
    run_id, server_ids = ctx.options.run_id, ctx.batch.server_ids
    for server_id in server_ids:
        if why := ctx.breaker.paused(server_id):
            detail = f"{ctx.servers[server_id].name}: {why.reason}: {why.detail}"
            return ItemOutcome(failed_trajectory(item, "server_paused", detail, run_id))
    tools = await lingering.enter_async_context(
        open_episode_tools(
            ctx.pool,
            isolated_specs(ctx.specs),
            lambda: make_pool(ctx.options.mcp, limits=ctx.options.limits),
        )
    )
    rules = rules_for(ctx.options.models, item.teacher)
    try:
        exposed = await list_exposed_tools(tools, ctx.servers, server_ids, rules)
    except McpError as error:
        for server_id in server_ids:
            if tools.dead_reason(server_id) is not None or len(server_ids) == 1:
                ctx.breaker.record_failure(server_id, error.reason, str(error))
        return ItemOutcome(failed_trajectory(item, error.reason, str(error), run_id))
    # the offer (targets + others, within the provider's rules and the budget) is what the
    # model sees and the row records
    offer = offer_tools(
        exposed, item.task.target_tools, ctx.options.models.prompt_budget, item.trajectory_id, rules
    )
    try:
        return await generate_trajectory(
            item,
            offer,
            tools,
            ctx.teacher,
            ctx.options,
            breaker=ctx.breaker,
            replay=replay,
            journal=ctx.journal,
            isolated_servers=tools.own_ids,
            catalog=exposed,
            router=ctx.teacher.router,
            rules=rules,
        )
    except Exception as error:  # the stage edge: one broken item must not sink the batch
        logger.exception("trajectory %s failed", item.trajectory_id)
        return ItemOutcome(failed_trajectory(item, "internal_error", repr(error), run_id))
