"""Extension 3's batch: one server group's conversations on the agent batch runner.

Each conversation pins the live sessions of its servers (`SessionPool.session_for`) for its
whole length; the pool and router are the batch's (tasks/agent/batch.py), built on the
batch's own event loop.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from mcp_env.pool import SessionPool
from tasks.agent.batch import (
    AgentBatch,
    BatchContext,
    BatchOptions,
    BatchResult,
    ItemOutcome,
    ServerEntry,
    list_exposed_tools,
    run_agent_batch,
)
from tasks.agent.breaker import ServerBreaker
from tasks.agent.naming import ExposedTool
from tasks.conversation import PinnedSessions
from tasks.multi_turn import converse
from tasks.multi_turn_records import STAGE, MultiTurnItem, failed_row
from tasks.tool_offer import ToolOffer, offer_tools
from toucan.config import McpConfig
from toucan.errors import McpError
from toucan.llm.cache import LlmCache
from toucan.llm.tool_rules import ToolRules, rules_for

logger = logging.getLogger(__name__)


class MultiTurnBatch(AgentBatch):
    """One server group's conversations: they share a session pool."""

    items: list[MultiTurnItem]


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


async def conversation_item(
    item: MultiTurnItem, ctx: BatchContext, _lingering: contextlib.AsyncExitStack
) -> ItemOutcome:
    """One conversation at the stage edge: any failure becomes an error row."""
    requested = 1 + item.follow_ups if item.method == "extend" else len(item.task.target_tools)
    options, server_ids = ctx.options, ctx.batch.server_ids
    rules = rules_for(options.models, item.teacher)
    try:
        catalog = await list_exposed_tools(ctx.pool, ctx.servers, server_ids, rules)
        offer = offered_tools(item, catalog, options, rules)
        async with pin_sessions(ctx.pool, server_ids, options.mcp) as pinned:
            row, conversation = await converse(
                item, offer.tools, pinned, ctx.teacher, ctx.teacher.router, options, catalog, rules
            )
        row.metadata["tool_offer"] = offer.record.model_dump()
    except McpError as error:
        return ItemOutcome(failed_row(item, error.reason, str(error), requested))
    except Exception as error:  # the stage edge: one broken item must not sink the batch
        logger.exception("multi-turn %s failed", item.trajectory_id)
        return ItemOutcome(failed_row(item, "internal_error", repr(error), requested))
    return ItemOutcome(row, conversation.toolbox)


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
    cache: LlmCache | None = None,
    breaker: ServerBreaker | None = None,
) -> BatchResult:
    """Run one batch's conversations; returns rows, never writes the store. `breaker`: the
    run's server breaker, shared by its batches."""
    return await run_agent_batch(
        batch,
        servers,
        options,
        STAGE,
        conversation_item,
        cache=cache,
        breaker=breaker,
    )
