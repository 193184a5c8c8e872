"""JSON-schema checks on tool schemas: one compiled validator per distinct schema, and `$ref`s
resolved only inside the schema itself (a remote `$ref` is never fetched; offline runs and
untrusted servers must not make us download anything).

Used by tolerant listing (is this schema usable?), the agent's argument check, output-schema
checks of tool results and the export's argument check.
"""

from __future__ import annotations

import copy
import functools
import json
from typing import Any
from urllib.parse import unquote

import jsonschema
from referencing import Registry
from referencing.exceptions import Unresolvable

from toucan.ids import canonical_json

# MCP spec 2025-11-25 (basic, "JSON Schema Usage"): a schema without `$schema` is 2020-12
DEFAULT_DIALECT = jsonschema.Draft202012Validator
# values under these keywords are data, not subschemas: a "$ref" inside them is not a reference
DATA_KEYWORDS = frozenset({"const", "enum", "default", "examples", "example"})
MESSAGE_CHARS = 300


@functools.lru_cache(maxsize=4096)
def _compiled(schema_text: str) -> tuple[Any | None, str | None]:
    """(validator, None) or (None, why the schema is unusable). Cached by canonical text:
    compiling costs far more than validating, and a run repeats the same few schemas."""
    schema = json.loads(schema_text)
    if not isinstance(schema, dict):
        return None, f"a schema must be an object, not {type(schema).__name__}"
    validator_class = jsonschema.validators.validator_for(schema, default=DEFAULT_DIALECT)
    try:
        validator_class.check_schema(schema)
    except jsonschema.SchemaError as error:
        return None, error.message[:MESSAGE_CHARS]
    return validator_class(schema, registry=Registry()), None


def schema_problem(schema: Any) -> str | None:
    """Why `schema` is not a valid JSON schema under its dialect, or None when it is."""
    return _compiled(canonical_json(schema))[1]


def check_instance(schema: Any, instance: Any) -> tuple[bool, str | None]:
    """(True, first violation or None) when the check ran; (False, why) when it could not:
    an invalid schema, or a `$ref` that does not resolve inside it. Never raises."""
    validator, problem = _compiled(canonical_json(schema))
    if validator is None:
        return False, problem
    try:
        error = jsonschema.exceptions.best_match(validator.iter_errors(instance))
    except Unresolvable as unresolvable:
        return False, f"unresolvable $ref: {unresolvable}"[:MESSAGE_CHARS]
    return True, None if error is None else error.message[:MESSAGE_CHARS]


def unresolved_refs(schema: dict[str, Any]) -> list[str]:
    """The distinct `$ref` values in `schema` that point nowhere inside it, in order found.
    Resolved: `#`, a JSON pointer (`#/$defs/Item`, RFC 6901) that exists, an `$anchor`."""
    anchors = set(_find_anchors(schema))
    missing: list[str] = []
    for ref in _find_refs(schema):
        if ref not in missing and not _resolves(schema, ref, anchors):
            missing.append(ref)
    return missing


def open_refs(schema: dict[str, Any], refs: list[str]) -> dict[str, Any]:
    """A copy of `schema` where each subschema whose `$ref` is in `refs` loses the `$ref`:
    what remains (a description, say, or nothing) accepts any value there."""
    opened = copy.deepcopy(schema)
    for node in _schema_nodes(opened):
        if node.get("$ref") in refs:
            del node["$ref"]
    return opened


def _schema_nodes(value: Any):
    """Every mapping in a schema that may hold keywords, skipping literal data."""
    if isinstance(value, dict):
        yield value
        for key, inner in value.items():
            if key not in DATA_KEYWORDS:
                yield from _schema_nodes(inner)
    elif isinstance(value, list):
        for inner in value:
            yield from _schema_nodes(inner)


def _find_refs(schema: dict[str, Any]) -> list[str]:
    return [node["$ref"] for node in _schema_nodes(schema) if isinstance(node.get("$ref"), str)]


def _find_anchors(schema: dict[str, Any]) -> list[str]:
    return [node["$anchor"] for node in _schema_nodes(schema) if "$anchor" in node]


def resolve_pointer(root: Any, ref: str) -> Any | None:
    """The value a local `$ref` ("#", "#/$defs/Item", "#/definitions/a~1b") points at in
    `root`, or None when it points nowhere (another document, an anchor, a missing key). The
    fragment is URL-decoded, then read as a JSON pointer with its ~1 and ~0 undone (RFC 6901)."""
    if not ref.startswith("#"):
        return None  # another document: never fetched
    pointer = unquote(ref[1:])
    if pointer and not pointer.startswith("/"):
        return None  # an $anchor, not a pointer
    node = root
    for token in pointer.split("/")[1:]:
        token = token.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and token in node:
            node = node[token]
        elif isinstance(node, list) and token.isdigit() and int(token) < len(node):
            node = node[int(token)]
        else:
            return None
    return node


def _resolves(schema: dict[str, Any], ref: str, anchors: set[str]) -> bool:
    anchor = unquote(ref[1:]) if ref.startswith("#") else ""
    if anchor and not anchor.startswith("/"):
        return anchor in anchors
    return resolve_pointer(schema, ref) is not None
