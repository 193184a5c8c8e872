"""Walking a JSON schema by its subschemas, and the local `$ref`s inlined.

Property names are never taken for keywords: `properties`, `$defs` and the like are maps of
subschemas, so a parameter named `description` or `type` stays a parameter.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mcp_env.tool_schemas import resolve_pointer

# keyword -> how its value holds subschemas (JSON Schema 2020-12 and drafts 4-7)
SUBSCHEMA_MAPS = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")
SUBSCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
SUBSCHEMA_SINGLES = (
    "items",
    "additionalItems",
    "additionalProperties",
    "unevaluatedItems",
    "unevaluatedProperties",
    "propertyNames",
    "contains",
    "not",
    "if",
    "then",
    "else",
)
DEFINITION_KEYS = ("$defs", "definitions")
MAX_INLINED_NODES = 5000  # shared definitions can grow a schema exponentially when inlined
MAX_DEPTH = 64  # deeper than any real tool schema; keeps the walks off Python's stack limit


def map_subschemas(schema: dict[str, Any], transform: Callable[[Any], Any]) -> dict[str, Any]:
    """A copy of `schema` with `transform` applied to each direct subschema (boolean
    subschemas such as `additionalProperties: false` are passed too)."""
    mapped = dict(schema)
    for key in SUBSCHEMA_MAPS:
        if isinstance(mapped.get(key), dict):
            mapped[key] = {name: transform(sub) for name, sub in mapped[key].items()}
    for key in SUBSCHEMA_LISTS:
        if isinstance(mapped.get(key), list):
            mapped[key] = [transform(sub) for sub in mapped[key]]
    for key in SUBSCHEMA_SINGLES:
        value = mapped.get(key)
        if isinstance(value, list):  # `items` as a tuple (drafts 4-7)
            mapped[key] = [transform(sub) for sub in value]
        elif isinstance(value, dict | bool):
            mapped[key] = transform(value)
    return mapped


def open_schema(siblings: dict[str, Any], why: str) -> dict[str, Any]:
    """An open schema (any value) that says why it is open, keeping the original's title and
    description."""
    kept = {key: siblings[key] for key in ("title", "description") if key in siblings}
    described = (
        f"{kept['description']} ({why})" if kept.get("description") else f"Any value ({why})."
    )
    return {**kept, "description": described}


def inline_refs(schema: dict[str, Any], notes: set[str]) -> dict[str, Any]:
    """`schema` with every local `$ref` replaced by what it points at and its definitions
    removed. A ref that points nowhere (`broken_ref`), outside the document (`remote_ref`) or
    back into itself (`recursive_ref`), and a schema beyond the size or depth guard
    (`schema_too_large`, `schema_too_deep`), become open schemas; the token goes in `notes`.
    Never raises."""
    budget = [MAX_INLINED_NODES]

    def walk(node: Any, seen: tuple[str, ...]) -> Any:
        if not isinstance(node, dict):
            return node
        budget[0] -= 1
        if budget[0] < 0 or len(seen) > MAX_DEPTH:
            token = "schema_too_large" if budget[0] < 0 else "schema_too_deep"
            notes.add(token)
            return open_schema(node, f"not shown: {token.replace('_', ' ')}")
        ref = node.get("$ref")
        if not isinstance(ref, str):
            plain = {k: v for k, v in node.items() if k not in DEFINITION_KEYS}
            return map_subschemas(plain, lambda sub: walk(sub, (*seen, "")))
        siblings = {k: v for k, v in node.items() if k != "$ref"}
        target = resolve_pointer(schema, ref)
        if ref in seen:
            notes.add("recursive_ref")
            return open_schema(siblings, f"recursive reference {ref}")
        if target is None:
            notes.add("broken_ref" if ref.startswith("#") else "remote_ref")
            return open_schema(siblings, f"unresolved reference {ref}")
        target = target if isinstance(target, dict) else {}
        return walk({**target, **siblings}, (*seen, ref))

    return walk(schema, ())
