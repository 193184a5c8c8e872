"""Following a server's `notifications/tools/list_changed` during one trajectory.

A server may change its tools while a trajectory runs (a login unlocks tools, a project switch
swaps them). MCP says so with `notifications/tools/list_changed` (spec 2025-06-18, "Server
features > Tools > List changed"); the session counts these (`tools_generation`). Before each
model turn the `ToolWatch` re-lists any server whose count moved and changes the offer: a tool
still offered keeps its place (with its new schema), a tool the server no longer lists leaves
the offer (a call to it gets `tool_removed`), a tool the server did not list before joins it.
Each change is a `ToolListChange` on the row; its `new_versions` carry the schemas the store's
`tools` table versions (flows write them with the onboarding rule).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from pydantic import BaseModel, Field

from mcp_env.results import ListedTool
from tasks.agent.naming import ExposedTool, expose_tools
from toucan.errors import McpError
from toucan.llm.tool_rules import DEFAULT_RULES, ToolRules

logger = logging.getLogger(__name__)


class ToolLister(Protocol):
    """What the watch needs from the MCP layer (EpisodeTools, PinnedSessions provide it)."""

    def tools_generation(self, server_id: str) -> int: ...

    async def relist_tools(self, server_id: str) -> list[ListedTool]: ...


class ToolListChange(BaseModel):
    """One announced change of one server's tools, as the row records it."""

    server_id: str
    server: str
    before_turn: int  # the first model turn (0-based) that was offered the new tools
    added: list[str] = Field(default_factory=list)  # exposed names offered from then on
    removed: list[str] = Field(default_factory=list)  # exposed names offered no longer
    changed: list[str] = Field(default_factory=list)  # still offered, with a new schema
    new_versions: list[ListedTool] = Field(default_factory=list)  # schemas not listed before


def merge_tool_schemas(
    seen: list[dict[str, Any]], offered: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Every tool a model was offered in a run, by name, each with its latest schema: what a
    row's `tools` holds once the offer changed mid-run (so every recorded call names a tool
    of the row)."""
    latest = {tool["function"]["name"]: tool for tool in offered}
    merged = [latest.pop(tool["function"]["name"], tool) for tool in seen]
    return merged + list(latest.values())


def new_tool_versions(rows: Iterable[Any]) -> dict[str, list[ListedTool]]:
    """server_id -> the tool schemas trajectory rows saw appear mid-run (for the tools table)."""
    found: dict[str, list[ListedTool]] = {}
    for row in rows:
        for change in row.metadata.get("tool_list_changes") or []:
            listed = [ListedTool.model_validate(tool) for tool in change.get("new_versions", [])]
            found.setdefault(change["server_id"], []).extend(listed)
    return found


class ToolWatch:
    """The live offer of one trajectory's tools; see the module docstring."""

    def __init__(
        self,
        lister: ToolLister,
        catalog: list[ExposedTool],
        *,
        namespaced: bool,
        rules: ToolRules = DEFAULT_RULES,
        define: Callable[[ExposedTool], ExposedTool] | None = None,
    ) -> None:
        """`rules` names new tools as the provider accepts them; `define` gives each tool that
        joins the offer the provider definition the first offer's tools got."""
        self.lister = lister
        self.rules = rules
        self.define = define
        self.catalog = list(catalog)  # every tool listed, offered or not
        self.namespaced = namespaced
        self.servers = {tool.server_id: tool.server for tool in catalog}
        self.generations = {sid: lister.tools_generation(sid) for sid in self.servers}
        self.changes: list[ToolListChange] = []
        self.removed: set[str] = set()  # exposed names the servers took away

    async def refresh(self, offer: list[ExposedTool], turn: int) -> list[ExposedTool] | None:
        """The new offer when a server announced a change since the last look, else None. A
        server that cannot be re-listed keeps its old offer (its calls then tell the model)."""
        updated: list[ExposedTool] | None = None
        for server_id, server in self.servers.items():
            generation = self.lister.tools_generation(server_id)
            if generation == self.generations[server_id]:
                continue
            self.generations[server_id] = generation
            try:
                listed = await self.lister.relist_tools(server_id)
            except McpError as error:
                logger.info("re-listing %s after list_changed failed: %s", server, error)
                continue
            updated = self._apply(updated or offer, server_id, server, listed, turn)
        return updated

    def _apply(
        self,
        offer: list[ExposedTool],
        server_id: str,
        server: str,
        listed: list[ListedTool],
        turn: int,
    ) -> list[ExposedTool]:
        fresh = expose_tools(
            [(server_id, server, listed)], namespace=self.namespaced, rules=self.rules
        )
        if self.define is not None:
            fresh = [self.define(tool) for tool in fresh]
        known = {
            tool.tool: tool.schema_hash for tool in self.catalog if tool.server_id == server_id
        }
        before = {tool.tool: tool for tool in offer if tool.server_id == server_id}
        kept = [tool for tool in fresh if tool.tool in before or tool.tool not in known]
        after = {tool.tool: tool for tool in kept}
        change = ToolListChange(
            server_id=server_id,
            server=server,
            before_turn=turn,
            added=[tool.name for name, tool in after.items() if name not in before],
            removed=[tool.name for name, tool in before.items() if name not in after],
            changed=[
                tool.name
                for name, tool in after.items()
                if name in before and before[name].schema_hash != tool.schema_hash
            ],
            new_versions=[tool for tool in listed if known.get(tool.name) != tool.schema_hash],
        )
        if change.added or change.removed or change.changed or change.new_versions:
            self.changes.append(change)
        self.removed = (self.removed | set(change.removed)) - {tool.name for tool in kept}
        self.catalog = [tool for tool in self.catalog if tool.server_id != server_id] + fresh
        others = [tool for tool in offer if tool.server_id != server_id]
        return sorted([*others, *kept], key=lambda tool: (tool.server_id, tool.tool))
