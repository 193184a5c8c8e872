"""Tool names as the model sees them: namespaced when a task spans several servers.

Each provider family has a name rule (toucan/llm/tool_rules.py; OpenAI and Anthropic:
^[a-zA-Z0-9_-]{1,64}$). A single-server task keeps the server's own tool names (when they are
legal); a multi-server task prefixes each tool with its server's slug (`<server>__<tool>`).
Names that would collide, overflow or break the rule get a short hash suffix. The mapping
exposed name -> (server, tool) is stored on the trajectory row.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict

from mcp_env.results import ListedTool
from tasks.agent.tool_schema import provider_definition
from toucan.ids import content_hash
from toucan.llm.tool_rules import DEFAULT_RULES, ToolRules

SEPARATOR = "__"
SAFE_START = "t_"  # a letter first, for rules (Gemini) that refuse a leading digit or dash


class ExposedTool(BaseModel):
    """One tool as the model sees it, and where a call to it goes."""

    model_config = ConfigDict(frozen=True)

    name: str  # the exposed (possibly namespaced) name
    server_id: str
    server: str
    tool: str  # the server's own tool name
    description: str
    input_schema: dict[str, Any]  # the server's own schema: calls are checked against it
    schema_hash: str
    # the tools-API entry offered to the model, made for its provider (tasks/tool_offer.py),
    # and the notes of what was changed to make it; None = not offered yet
    definition: dict[str, Any] | None = None
    definition_notes: tuple[str, ...] = ()

    def openai_schema(self) -> dict[str, Any]:
        """The tools-API entry, exactly as sent to the model: the offered definition, else
        the definition any OpenAI-compatible server takes."""
        if self.definition is not None:
            return self.definition
        return provider_definition(self.name, self.description, self.input_schema, DEFAULT_RULES)[0]


def slugify(text: str) -> str:
    """Lowercase, [a-z0-9_-] only, no leading/trailing separators."""
    slug = re.sub(r"[^a-zA-Z0-9_-]+", "_", text).strip("_-").lower()
    return slug or "x"


def legal_name(candidate: str, identity: str, rules: ToolRules = DEFAULT_RULES) -> str:
    """`candidate` if it obeys the rules' name pattern, else a slug cut to fit with a hash
    of `identity` (starting with a letter when the pattern wants one)."""
    pattern = re.compile(rules.name_pattern)
    if pattern.match(candidate) and len(candidate) <= rules.name_max_chars:
        return candidate
    suffix = "_" + content_hash(identity, 6)
    room = rules.name_max_chars - len(suffix)
    name = slugify(candidate)[:room] + suffix
    return name if pattern.match(name) else (SAFE_START + slugify(candidate))[:room] + suffix


def expose_tools(
    server_tools: list[tuple[str, str, list[ListedTool]]],
    *,
    namespace: bool | None = None,
    rules: ToolRules = DEFAULT_RULES,
) -> list[ExposedTool]:
    """(server_id, server name, tools) per server -> exposed tools with unique names legal
    under `rules`.

    `namespace=None` namespaces exactly when more than one server is present. The result is
    stable: the same input gives the same names, whatever order the servers come in.
    """
    if namespace is None:
        namespace = len(server_tools) > 1
    exposed: list[ExposedTool] = []
    taken: set[str] = set()
    for server_id, server_name, tools in sorted(server_tools, key=lambda entry: entry[0]):
        for tool in sorted(tools, key=lambda listed: listed.name):
            identity = f"{server_id}/{tool.name}"
            candidate = f"{slugify(server_name)}{SEPARATOR}{tool.name}" if namespace else tool.name
            name = legal_name(candidate, identity, rules)
            if name in taken:
                suffix = "_" + content_hash(identity, 6)
                name = name[: rules.name_max_chars - len(suffix)] + suffix
            taken.add(name)
            exposed.append(
                ExposedTool(
                    name=name,
                    server_id=server_id,
                    server=server_name,
                    tool=tool.name,
                    description=tool.description,
                    input_schema=tool.input_schema,
                    schema_hash=tool.schema_hash,
                )
            )
    return exposed


def name_map(exposed: list[ExposedTool]) -> dict[str, dict[str, str]]:
    """The stored mapping: exposed name -> {server_id, server, tool}."""
    return {
        tool.name: {"server_id": tool.server_id, "server": tool.server, "tool": tool.tool}
        for tool in exposed
    }
