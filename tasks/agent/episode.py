"""One trajectory's MCP sessions: one episode = one session for servers that keep state.

Servers marked `isolation: per_trajectory` (memory graphs, files, databases, git repos) get a
pool of their own per trajectory: their own process and sandbox, pre-started so the start
overlaps the first model turn, shut down when the trajectory ends. Every other server stays
on the batch's shared pool. Without this, a trajectory's tool results would depend on what
unrelated trajectories wrote, and a replay after a crash would not be faithful.

Tool lists come from the shared pool (one listing per batch, on a process stopped right
after), so a trajectory never waits for its own sessions before its first model turn.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from mcp_env.pool import SessionPool
from mcp_env.results import ListedTool, ToolResult
from mcp_env.session import AnySpec


class EpisodeTools:
    """A ToolCaller that routes each server to the shared pool or the trajectory's own."""

    def __init__(
        self,
        shared: SessionPool,
        own: SessionPool | None = None,
        own_ids: frozenset[str] = frozenset(),
    ) -> None:
        self.shared = shared
        self.own = own
        self.own_ids = own_ids if own is not None else frozenset()

    def pool_of(self, server_id: str) -> SessionPool:
        if self.own is not None and server_id in self.own_ids:
            return self.own
        return self.shared

    async def list_tools(self, server_id: str) -> list[ListedTool]:
        if server_id in self.own_ids:  # listed once per batch; that process is not kept
            return await self.shared.list_tools_then_stop(server_id)
        return await self.shared.list_tools(server_id)

    async def call_tool(
        self, server_id: str, tool: str, arguments: dict[str, Any], **options: Any
    ) -> ToolResult:
        """`options` as ToolCaller.call_tool's (timeout, handler)."""
        return await self.pool_of(server_id).call_tool(server_id, tool, arguments, **options)

    def tools_generation(self, server_id: str) -> int:
        return self.pool_of(server_id).tools_generation(server_id)

    async def relist_tools(self, server_id: str) -> list[ListedTool]:
        """The tools of the session the calls go to (the trajectory's own, if it has one),
        after that server announced a change."""
        return await self.pool_of(server_id).list_tools(server_id)

    def dead_reason(self, server_id: str) -> str | None:
        return self.pool_of(server_id).dead_reason(server_id) or self.shared.dead_reason(server_id)


def isolated_specs(specs: Sequence[AnySpec]) -> list[AnySpec]:
    """The specs that need a session of their own per trajectory."""
    return [spec for spec in specs if spec.isolation == "per_trajectory"]


@contextlib.asynccontextmanager
async def open_episode_tools(
    shared: SessionPool, own_specs: Sequence[AnySpec], open_pool: Callable[[], SessionPool]
) -> AsyncIterator[EpisodeTools]:
    """The trajectory's tool caller; `own_specs` start now in the background on a fresh pool
    from `open_pool()`, which is closed (processes stopped, sandboxes removed) on exit."""
    if not own_specs:
        yield EpisodeTools(shared)
        return
    async with open_pool() as own:
        for spec in own_specs:
            own.prestart(own.register(spec))
        yield EpisodeTools(shared, own, frozenset(spec.server_id for spec in own_specs))
