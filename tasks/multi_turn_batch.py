"""The Prefect task of extension 3: one server group's conversations on one session pool.

Each conversation pins the live sessions of its servers (`SessionPool.session_for`) for its
whole length; the pool and router are built here, on the task's own event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from prefect import task
from prefect.cache_policies import NONE
from pydantic import BaseModel

from mcp_env.environment import make_pool
from mcp_env.pool import SessionPool
from mcp_env.specs import parse_server_spec
from tasks.agent.naming import ExposedTool
from tasks.conversation import PinnedSessions
from tasks.multi_turn import STAGE, MultiTurnItem, MultiTurnResult, converse
from tasks.tool_offer import ToolOffer, offer_tools
from tasks.trajectories import BatchOptions, ServerEntry, list_exposed_tools
from toucan.config import McpConfig
from toucan.errors import McpError
from toucan.events import EventSink
from toucan.ids import make_id
from toucan.llm.cache import LlmCache
from toucan.llm.router import LlmRouter
from toucan.llm.tool_rules import ToolRules, rules_for
from toucan.records import LlmCacheEntry, Trajectory

logger = logging.getLogger(__name__)


class MultiTurnBatch(BaseModel):
    batch_id: str
    server_ids: list[str]
    items: list[MultiTurnItem]


def group_items(items: list[MultiTurnItem], size: int) -> list[MultiTurnBatch]:
    """Items grouped by their exact server set, cut into chunks of `size`."""
    groups: dict[tuple[str, ...], list[MultiTurnItem]] = {}
    for item in items:
        groups.setdefault(tuple(sorted(set(item.task.server_ids))), []).append(item)
    batches = []
    for server_ids, group in sorted(groups.items()):
        for start in range(0, len(group), max(1, size)):
            chunk = group[start : start + size]
            batch_id = make_id("mtbatch", server_ids, [i.trajectory_id for i in chunk])
            batches.append(
                MultiTurnBatch(batch_id=batch_id, server_ids=list(server_ids), items=chunk)
            )
    return batches


def failed_row(item: MultiTurnItem, reason: str, detail: str, requested: int) -> Trajectory:
    return Trajectory(
        trajectory_id=item.trajectory_id,
        task_id=item.task.task_id,
        kind="multi_turn",
        parent_id=item.base.trajectory_id if item.base else None,
        teacher=item.teacher,
        messages=item.base.messages
        if item.base
        else [{"role": "user", "content": item.task.question}],
        status="error",
        reason=reason,
        stop_reason="not_started",
        requested_turns=requested,
        completed_turns=1 if item.base else 0,
        metadata={"error": detail[:2000]},
    )


def offered_tools(
    item: MultiTurnItem, exposed: list[ExposedTool], options: BatchOptions, rules: ToolRules
) -> ToolOffer:
    """The tools the teacher is offered: an extension keeps its base trajectory's offer
    (when the base row recorded one), anything else gets a new offer within the provider's
    rules and the budget."""
    only = set(item.base.tool_name_map) if item.base is not None else set()
    return offer_tools(
        exposed,
        item.task.target_tools,
        options.models.prompt_budget,
        item.trajectory_id,
        rules,
        only or None,
    )


async def run_item(
    item: MultiTurnItem,
    batch: MultiTurnBatch,
    servers: dict[str, ServerEntry],
    pool: SessionPool,
    router: LlmRouter,
    options: BatchOptions,
) -> tuple[Trajectory, list]:
    requested = 1 + item.follow_ups if item.method == "extend" else len(item.task.target_tools)
    rules = rules_for(options.models, item.teacher)
    try:
        catalog = await list_exposed_tools(pool, servers, batch.server_ids, rules)
        offer = offered_tools(item, catalog, options, rules)
        async with pin_sessions(pool, batch.server_ids, options.mcp) as pinned:
            row, conversation = await converse(
                item, offer.tools, pinned, router, router, options, catalog, rules
            )
        row.metadata["tool_offer"] = offer.record
    except McpError as error:
        return failed_row(item, error.reason, str(error), requested), []
    except Exception as error:  # the stage edge: one broken item must not sink the batch
        logger.exception("multi-turn %s failed", item.trajectory_id)
        return failed_row(item, "internal_error", repr(error), requested), []
    return row, conversation.toolbox.records


@contextlib.asynccontextmanager
async def pin_sessions(
    pool: SessionPool, server_ids: list[str], mcp: McpConfig
) -> AsyncIterator[PinnedSessions]:
    """Hold the live session of every server of the batch for one whole conversation."""
    async with contextlib.AsyncExitStack() as stack:
        sessions = {
            sid: await stack.enter_async_context(pool.session_for(sid)) for sid in server_ids
        }
        yield PinnedSessions(sessions, timeout_max=mcp.call_timeout_max_s)


async def run_multi_turn_batch(
    batch: MultiTurnBatch,
    servers: dict[str, ServerEntry],
    options: BatchOptions,
    cache_entries: list[LlmCacheEntry] | None = None,
) -> MultiTurnResult:
    """Run one batch on its own pool and router; returns rows, never writes the store."""
    sink = EventSink(options.run_id, STAGE)
    cache = LlmCache(cache_entries, run_id=options.run_id)
    router = LlmRouter(options.models, local_base_url=options.local_base_url, cache=cache)
    result = MultiTurnResult()
    limit = asyncio.Semaphore(max(1, options.concurrency))
    async with make_pool(options.mcp) as pool:
        for server_id in batch.server_ids:
            pool.register(parse_server_spec(servers[server_id].spec))
        names = ",".join(servers[s].name for s in batch.server_ids)

        async def one(item: MultiTurnItem) -> None:
            async with limit:
                with sink.timed(
                    item_id=item.trajectory_id, server=names, model=item.teacher
                ) as out:
                    row, calls = await run_item(item, batch, servers, pool, router, options)
                    out.update(
                        status=row.status,
                        error_class=row.reason,
                        tokens_in=row.usage.prompt_tokens,
                        tokens_out=row.usage.completion_tokens,
                        cost_usd=row.cost_usd,
                    )
            result.trajectories.append(row.model_copy(update={"run_id": options.run_id}))
            result.tool_calls.extend(calls)

        await asyncio.gather(*(one(item) for item in batch.items))
    result.cache_entries = cache.drain_new()
    result.events = [*sink.drain(), *router.drain_events()]
    return result


@task(name="multi-turn-batch", persist_result=False, cache_policy=NONE, retries=0)
async def multi_turn_batch(
    batch: MultiTurnBatch,
    servers: dict[str, ServerEntry],
    options: BatchOptions,
    cache_entries: list[LlmCacheEntry] | None = None,
) -> MultiTurnResult:
    return await run_multi_turn_batch(batch, servers, options, cache_entries)
