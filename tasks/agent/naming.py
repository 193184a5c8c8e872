"""Tool names as the model sees them: namespaced when a task spans several servers.

OpenAI-style APIs accept names matching ^[a-zA-Z0-9_-]{1,64}$. A single-server task keeps the
server's own tool names (when they are legal); a multi-server task prefixes each tool with its
server's slug (`<server>__<tool>`). Names that would collide or overflow get a short hash
suffix. The mapping exposed name -> (server, tool) is stored on the trajectory row.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict

from mcp_env.results import ListedTool
from toucan.ids import content_hash

NAME_RULE = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
MAX_NAME_CHARS = 64
SEPARATOR = "__"


class ExposedTool(BaseModel):
    """One tool as the model sees it, and where a call to it goes."""

    model_config = ConfigDict(frozen=True)

    name: str  # the exposed (possibly namespaced) name
    server_id: str
    server: str
    tool: str  # the server's own tool name
    description: str
    input_schema: dict[str, Any]
    schema_hash: str

    def openai_schema(self) -> dict[str, Any]:
        """The tools-API entry, exactly as sent to the model."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": normalise_parameters(self.input_schema),
            },
        }


def normalise_parameters(schema: dict[str, Any]) -> dict[str, Any]:
    """Providers reject a parameters object without `type: object` or `properties`."""
    parameters = dict(schema) if isinstance(schema, dict) else {}
    parameters.setdefault("type", "object")
    if parameters.get("type") == "object":
        parameters.setdefault("properties", {})
    return parameters


def slugify(text: str) -> str:
    """Lowercase, [a-z0-9_-] only, no leading/trailing separators."""
    slug = re.sub(r"[^a-zA-Z0-9_-]+", "_", text).strip("_-").lower()
    return slug or "x"


def legal_name(candidate: str, identity: str) -> str:
    """`candidate` if it obeys the rule, else a slug cut to fit with a hash of `identity`."""
    if NAME_RULE.match(candidate):
        return candidate
    suffix = "_" + content_hash(identity, 6)
    return slugify(candidate)[: MAX_NAME_CHARS - len(suffix)] + suffix


def expose_tools(
    server_tools: list[tuple[str, str, list[ListedTool]]], *, namespace: bool | None = None
) -> list[ExposedTool]:
    """(server_id, server name, tools) per server -> exposed tools with unique legal names.

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
            name = legal_name(candidate, identity)
            if name in taken:
                suffix = "_" + content_hash(identity, 6)
                name = name[: MAX_NAME_CHARS - len(suffix)] + suffix
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
