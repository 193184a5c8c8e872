"""Tolerant `tools/list`: every tool gets its own verdict, so one bad tool costs only itself.

The SDK validates a whole page at once, and one tool without a root `type` (or with an
`outputSchema` that is not an object) used to cost a server all its tools. Here each raw tool
is checked alone: repaired where the intent is clear (root `type: object` missing, `$ref` to
nothing opened up, a bad `outputSchema` dropped), otherwise rejected with a reason token.
Paging stops at a cursor that does not advance.

Sizes are capped by the `limits` settings (mcp_env/limits.py): a long description is cut, an
input schema too large or a name too long rejects the tool, tools past `tools_per_server`
are left out (`tools_cut` on the listing).

Repair tokens: missing_input_schema, missing_root_type, root_type_narrowed, unresolved_ref,
output_schema_dropped, annotations_dropped, invalid_field_dropped, description_cut.
Rejection reasons: not_an_object, missing_name, invalid_input_schema, input_schema_not_object,
duplicate_name, invalid_tool, name_too_long, schema_too_large.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mcp_types import Tool as SdkTool
from pydantic import ValidationError

from mcp_env.limits import (
    DEFAULT_LIMITS,
    cap_description,
    check_name,
    check_schema_size,
    json_size,
)
from mcp_env.results import ListedTool, ToolListing
from mcp_env.tool_schemas import open_refs, schema_problem, unresolved_refs
from toucan.config import LimitsConfig
from toucan.errors import ToolListError
from toucan.ids import canonical_json, schema_hash
from toucan.records import ToolRejection, protocol_annotations

# fields a tool may do without: a bad value is dropped instead of costing the tool
OPTIONAL_FIELDS = frozenset(
    {"title", "description", "outputSchema", "annotations", "icons", "execution", "_meta"}
)
DETAIL_CHARS = 300
NO_ARGUMENTS: dict[str, Any] = {"type": "object", "properties": {}}


def page_tools(page: Any) -> list[Any]:
    """The raw tools of one `tools/list` result. Raises ToolListError(malformed_tool_list)
    when the result is not an object holding a `tools` list (nothing per-tool to save)."""
    if not isinstance(page, dict) or not isinstance(page.get("tools"), list):
        shown = canonical_json(page)[:DETAIL_CHARS]
        raise ToolListError(
            f"tools/list result is not a tool list: {shown}", reason="malformed_tool_list"
        )
    return page["tools"]


def next_cursor(page: dict[str, Any], seen: set[str]) -> tuple[str | None, str | None]:
    """(cursor to request next, note) per MCP spec 2025-06-18 utilities/pagination: no or an
    empty `nextCursor` ends the listing; one already sent would repeat pages forever
    (`stuck_cursor`); one that is not a string cannot be sent back (`invalid_cursor`)."""
    cursor = page.get("nextCursor")
    if cursor is None or cursor == "":
        return None, None
    if not isinstance(cursor, str):
        return None, "invalid_cursor"
    if cursor in seen:
        return None, "stuck_cursor"
    seen.add(cursor)
    return cursor, None


def build_listing(
    pages: Sequence[Sequence[Any]],
    notes: Sequence[str] = (),
    limits: LimitsConfig = DEFAULT_LIMITS,
) -> ToolListing:
    """Every raw tool of every page to a usable tool or a rejection, each name once: the
    first definition of a name wins; a repeat of it is dropped (`duplicate_tool_names`
    on the listing), a different definition under the same name is rejected (`duplicate_name`).
    Usable tools past `limits.tools_per_server` are left out (`tools_cut`)."""
    listing = ToolListing(notes=list(notes))
    first_seen: dict[str, str] = {}
    position = 0
    for page in pages:
        for raw in page:
            position += 1
            name = raw.get("name") if isinstance(raw, dict) else None
            if isinstance(name, str) and name in first_seen:
                _note(listing, "duplicate_tool_names")
                if canonical_json(raw) != first_seen[name]:
                    detail = f"entry {position} redefines {name!r}; the first definition is kept"
                    listing.rejected.append(_rejection(name, "duplicate_name", detail))
                continue
            if isinstance(name, str):
                first_seen[name] = canonical_json(raw)
            verdict = parse_tool(raw, position, limits)
            target = listing.tools if isinstance(verdict, ListedTool) else listing.rejected
            target.append(verdict)  # type: ignore[arg-type]
    if len(listing.tools) > limits.tools_per_server:
        del listing.tools[limits.tools_per_server :]
        _note(listing, "tools_cut")
    return listing


def parse_tool(
    raw: Any, position: int = 0, limits: LimitsConfig = DEFAULT_LIMITS
) -> ListedTool | ToolRejection:
    """One raw tool (as sent in `tools/list`, camelCase keys) to a usable, repaired tool, or
    to a rejection naming why it cannot be used. Never raises."""
    name = raw.get("name") if isinstance(raw, dict) else None
    label = name if isinstance(name, str) and name.strip() else f"#{position}"
    try:
        if not isinstance(raw, dict):
            raise ToolListError(f"entry is a {type(raw).__name__}", reason="not_an_object")
        if label != name:
            raise ToolListError("the tool has no name", reason="missing_name")
        check_name(name, limits, "tool")
        return _usable_tool(raw, limits)
    except ToolListError as error:
        return _rejection(label[: limits.name_chars], error.reason, str(error))


def _usable_tool(raw: dict[str, Any], limits: LimitsConfig) -> ListedTool:
    repairs: list[tuple[str, str]] = []
    check_schema_size(raw.get("inputSchema"), limits)
    input_schema = repair_input_schema(raw.get("inputSchema"), repairs)
    candidate = {key: value for key, value in raw.items() if key != "outputSchema"}
    candidate["inputSchema"] = input_schema
    if isinstance(candidate.get("description"), str):
        candidate["description"] = cap_description(candidate["description"], limits, repairs)
    output_schema = raw.get("outputSchema")
    if output_schema is not None and json_size(output_schema) > limits.schema_bytes:
        repairs.append(("output_schema_dropped", "outputSchema over limits.schema_bytes"))
        output_schema = None
    output_schema = repair_output_schema(output_schema, repairs)
    if output_schema is not None:
        candidate["outputSchema"] = output_schema
    if "annotations" in candidate and candidate["annotations"] is not None:
        if isinstance(candidate["annotations"], dict):
            candidate["annotations"] = protocol_annotations(candidate["annotations"])
        else:
            del candidate["annotations"]
            repairs.append(("annotations_dropped", "annotations is not an object"))
    tool = validate_with_sdk(candidate, repairs)
    annotations = {}
    if tool.annotations is not None:
        annotations = tool.annotations.model_dump(by_alias=True, exclude_none=True, mode="json")
    return ListedTool(
        name=tool.name,
        description=tool.description or "",
        input_schema=input_schema,
        output_schema=output_schema,
        annotations=annotations,
        schema_hash=schema_hash(input_schema),
        repairs=[token for token, _ in repairs],
        repair_detail="; ".join(f"{token}: {detail}" for token, detail in repairs),
    )


def repair_input_schema(schema: Any, repairs: list[tuple[str, str]]) -> dict[str, Any]:
    """The schema to offer, with what was repaired appended to `repairs`. A tool's arguments
    are an object (MCP spec 2025-06-18 server/tools: `inputSchema` is a JSON Schema object
    with `type: "object"`). Raises ToolListError when no usable object schema is left."""
    if schema is None:
        repairs.append(("missing_input_schema", "no inputSchema: taken as no arguments"))
        return dict(NO_ARGUMENTS)
    if not isinstance(schema, dict):
        raise ToolListError(
            f"inputSchema is a {type(schema).__name__}", reason="invalid_input_schema"
        )
    root_type = schema.get("type")
    if root_type is None:
        schema = {"type": "object", **schema}
        repairs.append(("missing_root_type", "inputSchema had no root type: object added"))
    elif isinstance(root_type, list) and "object" in root_type:
        schema = {**schema, "type": "object"}
        repairs.append(("root_type_narrowed", f"root type {root_type} narrowed to object"))
    elif root_type != "object":
        raise ToolListError(f"root type is {root_type!r}", reason="input_schema_not_object")
    if missing := unresolved_refs(schema):
        schema = open_refs(schema, missing)
        shown = ", ".join(missing)
        repairs.append(("unresolved_ref", f"{shown} points nowhere: any value accepted there"))
    if problem := schema_problem(schema):
        raise ToolListError(f"inputSchema: {problem}", reason="invalid_input_schema")
    return schema


def repair_output_schema(schema: Any, repairs: list[tuple[str, str]]) -> dict[str, Any] | None:
    """The `outputSchema` kept to check results against, or None: absent, or dropped (noted
    in `repairs`) when it is not an object schema (MCP spec 2025-06-18 server/tools), is
    invalid, or holds a `$ref` to nothing. A dropped schema never costs the tool."""
    if schema is None:
        return None
    why = None
    if not isinstance(schema, dict):
        why = f"outputSchema is a {type(schema).__name__}"
    elif schema.get("type") != "object":
        why = f"outputSchema root type is {schema.get('type')!r}, not 'object'"
    elif missing := unresolved_refs(schema):
        why = f"outputSchema $ref {', '.join(missing)} resolves to nothing"
    elif problem := schema_problem(schema):
        why = f"outputSchema: {problem}"
    if why is not None:
        repairs.append(("output_schema_dropped", why))
        return None
    return schema


def validate_with_sdk(candidate: dict[str, Any], repairs: list[tuple[str, str]]) -> SdkTool:
    """The SDK's own model of the tool, so whatever we accept the SDK accepts too. Optional
    fields it refuses are dropped (once, noted); anything else rejects the tool."""
    try:
        return SdkTool.model_validate(candidate, by_name=False)
    except ValidationError as error:
        fields = {str(issue["loc"][0]) for issue in error.errors() if issue["loc"]}
        if not fields or not fields <= OPTIONAL_FIELDS:
            raise ToolListError(_short(error), reason="invalid_tool") from error
    repairs.append(("invalid_field_dropped", ", ".join(sorted(fields))))
    trimmed = {key: value for key, value in candidate.items() if key not in fields}
    try:
        return SdkTool.model_validate(trimmed, by_name=False)
    except ValidationError as error:
        raise ToolListError(_short(error), reason="invalid_tool") from error


def _short(error: ValidationError) -> str:
    issues = error.errors()[:3]
    return "; ".join(f"{'.'.join(map(str, i['loc']))}: {i['msg']}" for i in issues)[:DETAIL_CHARS]


def _rejection(name: str, reason: str, detail: str) -> ToolRejection:
    return ToolRejection(name=name, reason=reason, detail=detail[:DETAIL_CHARS])


def _note(listing: ToolListing, note: str) -> None:
    if note not in listing.notes:
        listing.notes.append(note)
