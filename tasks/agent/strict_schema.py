"""OpenAI strict mode: a tool's parameters rewritten to its rules, or None when they cannot be
without changing which calls are valid.

Rules ("Supported schemas", https://platform.openai.com/docs/guides/structured-outputs):
every object closed (`additionalProperties: false`) and listing every property in `required`,
so an optional property becomes required-but-nullable; only the keywords of
`OPENAI_STRICT_KEYWORDS`; at most 5000 object properties and 10 levels of nesting. A free-form
object, a map (`additionalProperties` with a schema), `allOf`/`oneOf`/`not`/conditionals, or a
schema with no type cannot be said strictly: the caller offers the tool without strict.
The nulls a strict model sends for optional arguments are dropped before the server sees
them (`drop_added_nulls`).
"""

from __future__ import annotations

from typing import Any

from toucan.llm.tool_rules import (
    OPENAI_STRICT_KEYWORDS,
    OPENAI_STRICT_MAX_DEPTH,
    OPENAI_STRICT_MAX_PROPERTIES,
)

# keywords whose meaning strict mode cannot carry (dropping them would widen or narrow the
# set of valid calls); every other keyword outside the allow-list is an annotation or a
# length bound, dropped
UNSAYABLE = frozenset(
    {
        "allOf",
        "oneOf",
        "not",
        "if",
        "then",
        "else",
        "patternProperties",
        "dependentSchemas",
        "dependentRequired",
        "prefixItems",
        "contains",
        "propertyNames",
        "unevaluatedProperties",
        "unevaluatedItems",
        "additionalItems",
    }
)


def nullable(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema` that also accepts null (how strict mode says "optional")."""
    kind = schema.get("type")
    if isinstance(kind, str) and kind != "null":
        schema = {**schema, "type": [kind, "null"]}
    elif isinstance(kind, list) and "null" not in kind:
        schema = {**schema, "type": [*kind, "null"]}
    elif kind is None:
        return {"anyOf": [schema, {"type": "null"}]}
    if isinstance(schema.get("enum"), list) and None not in schema["enum"]:
        schema = {**schema, "enum": [*schema["enum"], None]}
    return schema


def strict_object(
    node: dict[str, Any], depth: int, counter: list[int], root: bool
) -> dict[str, Any] | None:
    properties = node.get("properties") or {}
    extra = node.get("additionalProperties")
    if not isinstance(properties, dict) or extra not in (None, False):
        return None
    if not properties and extra is None and not root:
        return None  # a free-form object: closing it would forbid every key
    counter[0] += len(properties)
    if counter[0] > OPENAI_STRICT_MAX_PROPERTIES:
        return None
    required = set(node.get("required") or [])
    closed: dict[str, Any] = {}
    for name, sub in properties.items():
        strict = strict_node(sub, depth + 1, counter)
        if strict is None:
            return None
        closed[name] = strict if name in required else nullable(strict)
    return {**node, "properties": closed, "required": list(closed), "additionalProperties": False}


def strict_node(
    node: Any, depth: int, counter: list[int], root: bool = False
) -> dict[str, Any] | None:
    """One schema node under strict rules, or None when it cannot be said strictly."""
    if not isinstance(node, dict) or depth > OPENAI_STRICT_MAX_DEPTH or UNSAYABLE & set(node):
        return None
    node = {key: value for key, value in node.items() if key in OPENAI_STRICT_KEYWORDS}
    if not {"type", "anyOf", "enum", "const"} & set(node):
        return None
    kind = node.get("type")
    if kind == "object" or (isinstance(kind, list) and "object" in kind):
        return strict_object(node, depth, counter, root)
    if kind == "array" or (isinstance(kind, list) and "array" in kind):
        items = strict_node(node.get("items"), depth + 1, counter)
        if items is None:
            return None
        node = {**node, "items": items}
    if isinstance(node.get("anyOf"), list):
        alternatives = [strict_node(sub, depth + 1, counter) for sub in node["anyOf"]]
        if any(a is None for a in alternatives):
            return None
        node = {**node, "anyOf": alternatives}
    return node


def strict_parameters(parameters: dict[str, Any]) -> dict[str, Any] | None:
    """`parameters` (an object root, refs inlined) under strict rules, or None."""
    return strict_node(parameters, 1, [0], root=True)


def drop_added_nulls(arguments: dict[str, Any], input_schema: dict[str, Any]) -> dict[str, Any]:
    """The arguments without the top-level nulls a strict model sent for properties the
    server's schema leaves optional and does not declare nullable (strict mode makes the
    model send every property; the server should see what it would have been sent)."""
    required = set(input_schema.get("required") or [])
    properties = input_schema.get("properties") or {}

    def accepts_null(name: str) -> bool:
        declared = properties.get(name)
        if not isinstance(declared, dict):
            return False
        kind = declared.get("type")
        return kind == "null" or (isinstance(kind, list) and "null" in kind)

    return {
        name: value
        for name, value in arguments.items()
        if value is not None or name in required or accepts_null(name)
    }
