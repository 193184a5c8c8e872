"""The providers' documented tool rules, written out independently of toucan's table, and a
checker that lists every way a request's tool definitions break them.

Sources: OpenAI API reference (`tools`: max 128, `function.name` a-z A-Z 0-9 _ - up to 64,
`function.description` up to 1,024) and the structured-outputs guide (strict mode); Anthropic
tool-use docs (name ^[a-zA-Z0-9_-]{1,64}$, `input_schema` an object, no anyOf/oneOf/allOf
at its top level); Gemini API `FunctionDeclaration` and `Schema` (name, OpenAPI subset).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, get_type_hints

import jsonschema
from litellm.types.llms.vertex_ai import Schema

QUIRKS = Path(__file__).resolve().parents[1] / "servers" / "quirks"
PORTABLE_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
DOCUMENTED: dict[str, dict[str, Any]] = {
    "openai": {"name": PORTABLE_NAME, "max_tools": 128, "description": 1024},
    "anthropic": {"name": PORTABLE_NAME, "max_tools": None, "description": None},
    "gemini": {
        "name": re.compile(r"^[a-zA-Z_][a-zA-Z0-9_.:-]{0,63}$"),
        "max_tools": 128,
        "description": None,
    },
    "openai_compatible": {"name": PORTABLE_NAME, "max_tools": None, "description": None},
}
# LiteLLM's own record of Gemini's `Schema` fields: a second source, not toucan's table
GEMINI_SCHEMA_FIELDS = set(get_type_hints(Schema))
ANTHROPIC_ROOT_FIELDS = {"type", "properties", "required", "additionalProperties"}
ROOT_COMBINATORS = {"anyOf", "oneOf", "allOf"}


def quirk_tools(fixture: str) -> list[dict[str, Any]]:
    """The tools a fixture's server lists, as the server sends them."""
    return json.loads((QUIRKS / f"{fixture}.json").read_text())["tools"]


def fixtures() -> list[str]:
    """Every quirk fixture that lists tools (not_a_tool_list only sends a broken page)."""
    return sorted(
        path.stem for path in QUIRKS.glob("*.json") if json.loads(path.read_text()).get("tools")
    )


def schema_nodes(schema: Any) -> Iterator[dict[str, Any]]:
    """Every subschema a provider reads (property names are not schemas)."""
    if not isinstance(schema, dict):
        return
    yield schema
    for sub in (schema.get("properties") or {}).values():
        yield from schema_nodes(sub)
    for key in ("items", "additionalProperties", "not"):
        yield from schema_nodes(schema.get(key))
    for key in ("anyOf", "oneOf", "allOf"):
        for sub in schema.get(key) or []:
            yield from schema_nodes(sub)


def gemini_violations(parameters: dict[str, Any]) -> list[str]:
    found = []
    for node in schema_nodes(parameters):
        found += [f"gemini refuses `{key}`" for key in set(node) - GEMINI_SCHEMA_FIELDS]
        if "type" in node and not isinstance(node["type"], str):
            found.append("gemini takes one type per schema")
        if "enum" in node and not all(isinstance(v, str) and v for v in node["enum"]):
            found.append("gemini takes non-empty string enums only")
        if node.get("type") == "object" and node.get("properties") == {}:
            found.append("gemini refuses an empty properties map")
        if node.get("type") == "array" and not isinstance(node.get("items"), dict):
            found.append("gemini wants items on an array")
    return found


def strict_violations(function: dict[str, Any]) -> list[str]:
    if function.get("strict") is not True:
        return []
    found = []
    for node in schema_nodes(function["parameters"]):
        kind = node.get("type")
        if kind == "object" or (isinstance(kind, list) and "object" in kind):
            if node.get("additionalProperties") is not False:
                found.append("strict objects are closed")
            if sorted(node.get("required") or []) != sorted(node.get("properties") or {}):
                found.append("strict objects require every property")
        found += [f"strict refuses `{key}`" for key in {"default", "allOf", "oneOf"} & set(node)]
    return found


def definition_violations(tool: dict[str, Any], family: str) -> list[str]:
    rules = DOCUMENTED[family]
    function = tool["function"]
    parameters = function.get("parameters")
    found = []
    if not rules["name"].match(function["name"]):
        found.append(f"name {function['name']!r}")
    limit = rules["description"]
    if limit is not None and len(function.get("description", "")) > limit:
        found.append(f"description of {len(function['description'])} characters")
    if not isinstance(parameters, dict) or parameters.get("type") != "object":
        return [*found, "parameters root is not an object"]
    if "$ref" in json.dumps(parameters):
        found.append("a $ref is left")
    jsonschema.Draft202012Validator.check_schema(parameters)
    if family != "openai_compatible" and ROOT_COMBINATORS & set(parameters):
        found.append("combinator at the root")
    if family == "anthropic":
        found += [f"anthropic root `{k}`" for k in set(parameters) - ANTHROPIC_ROOT_FIELDS]
    if family == "gemini":
        found += gemini_violations(parameters)
    return found + strict_violations(function)


def request_violations(tools: list[dict[str, Any]], family: str) -> list[str]:
    """Every way the `tools` of one request break the family's documented rules."""
    found = []
    limit = DOCUMENTED[family]["max_tools"]
    if limit is not None and len(tools) > limit:
        found.append(f"{len(tools)} tools")
    names = [tool["function"]["name"] for tool in tools]
    if len(set(names)) != len(names):
        found.append("duplicate names")
    for tool in tools:
        found += [f"{tool['function']['name']}: {v}" for v in definition_violations(tool, family)]
    return found
