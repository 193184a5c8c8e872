"""Tolerant listing as plain functions: per-tool verdicts, repairs, cursors, schema checks."""

from __future__ import annotations

import pytest

from mcp_env.listing import build_listing, next_cursor, page_tools, parse_tool
from mcp_env.results import ListedTool, check_structured_content
from mcp_env.tool_schemas import check_instance, open_refs, unresolved_refs
from toucan.errors import ToolListError
from toucan.records import ToolRejection

ITEM_REF = {"type": "object", "properties": {"item": {"$ref": "#/$defs/Item"}}}


def tool(name: str, schema: object = None, **extra: object) -> dict[str, object]:
    entry: dict[str, object] = {"name": name, "description": f"{name} tool", **extra}
    if schema is not None:
        entry["inputSchema"] = schema
    return entry


def test_a_good_tool_is_kept_as_sent():
    listed = parse_tool(tool("get", {"type": "object", "properties": {"a": {"type": "string"}}}))
    assert isinstance(listed, ListedTool)
    assert listed.repairs == [] and listed.input_schema["properties"] == {"a": {"type": "string"}}


@pytest.mark.parametrize(
    ("schema", "repair"),
    [
        ({"properties": {}}, "missing_root_type"),
        ({"anyOf": [{"type": "object", "properties": {"city": {"type": "string"}}}]}, None),
        (None, "missing_input_schema"),
        ({"type": ["object", "null"], "properties": {}}, "root_type_narrowed"),
    ],
)
def test_schemas_without_an_object_root_type_are_repaired(schema, repair):
    listed = parse_tool(tool("t", schema))
    assert isinstance(listed, ListedTool)
    assert listed.input_schema["type"] == "object"
    assert listed.repairs == [repair or "missing_root_type"]
    assert listed.repair_detail.startswith(listed.repairs[0])


BAD_TYPE = {"type": "object", "properties": {"a": {"type": 5}}}


@pytest.mark.parametrize(
    ("raw", "name", "reason"),
    [
        ("just a string", "#3", "not_an_object"),
        ({"description": "no name", "inputSchema": {"type": "object"}}, "#3", "missing_name"),
        (tool("", {"type": "object"}), "#3", "missing_name"),
        ({"name": ["not", "text"], "inputSchema": {"type": "object"}}, "#3", "missing_name"),
        (tool("five", 5), "five", "invalid_input_schema"),
        (tool("array", {"type": "array", "items": {}}), "array", "input_schema_not_object"),
        (tool("bad_type", BAD_TYPE), "bad_type", "invalid_input_schema"),
    ],
)
def test_tools_that_cannot_be_used_are_rejected_with_a_reason(raw, name, reason):
    verdict = parse_tool(raw, position=3)
    assert isinstance(verdict, ToolRejection)
    assert (verdict.name, verdict.reason) == (name, reason)
    assert verdict.detail


def test_an_unresolvable_ref_is_opened_up_and_noted():
    described = {"$ref": "#/$defs/Item", "description": "the item"}
    listed = parse_tool(tool("add_item", {**ITEM_REF, "properties": {"item": described}}))
    assert isinstance(listed, ListedTool)
    assert listed.repairs == ["unresolved_ref"] and "#/$defs/Item" in listed.repair_detail
    assert listed.input_schema["properties"]["item"] == {"description": "the item"}
    assert check_instance(listed.input_schema, {"item": {"anything": 1}}) == (True, None)


def test_refs_that_resolve_are_left_alone():
    schema = {
        "type": "object",
        "$defs": {"Item": {"type": "string"}, "a/b": {"$anchor": "ab", "type": "number"}},
        "properties": {
            "item": {"$ref": "#/$defs/Item"},
            "slash": {"$ref": "#/$defs/a~1b"},
            "anchor": {"$ref": "#ab"},
            "self": {"$ref": "#"},
            "literal": {"const": {"$ref": "#/nowhere"}},
        },
    }
    assert unresolved_refs(schema) == []
    assert unresolved_refs({"properties": {"x": {"$ref": "https://example.com/s.json"}}}) == [
        "https://example.com/s.json"
    ]
    opened = open_refs(ITEM_REF, ["#/$defs/Item"])
    assert opened["properties"]["item"] == {} and ITEM_REF["properties"]["item"]


@pytest.mark.parametrize(
    "output_schema",
    [
        {"properties": {"value": {"type": "number"}}},
        {"type": "array", "items": {"type": "number"}},
        "not a schema",
        {"type": "object", "properties": {"v": {"$ref": "#/$defs/V"}}},
    ],
)
def test_a_bad_output_schema_is_dropped_and_the_tool_kept(output_schema):
    listed = parse_tool(tool("out", {"type": "object"}, outputSchema=output_schema))
    assert isinstance(listed, ListedTool)
    assert listed.output_schema is None and listed.repairs == ["output_schema_dropped"]


def test_a_good_output_schema_is_kept():
    schema = {"type": "object", "properties": {"value": {"type": "number"}}, "required": ["value"]}
    listed = parse_tool(tool("out", {"type": "object"}, outputSchema=schema))
    assert isinstance(listed, ListedTool) and listed.output_schema == schema
    assert check_structured_content(schema, {"value": 1}) is None
    assert check_structured_content(schema, None) == "structured_content_missing"
    assert check_structured_content(schema, {"value": "x"}) == "output_schema_mismatch"


def test_annotations_keep_their_protocol_names():
    raw = tool("read", {"type": "object"}, annotations={"readOnlyHint": True, "title": "Read"})
    snake = tool("old", {"type": "object"}, annotations={"read_only_hint": True})
    assert parse_tool(raw).annotations == {"readOnlyHint": True, "title": "Read"}
    assert parse_tool(snake).annotations == {"readOnlyHint": True}


def test_bad_optional_fields_are_dropped_not_the_tool():
    raw = tool("t", {"type": "object"}, annotations={"readOnlyHint": {"no": 1}}, icons="none")
    listed = parse_tool(raw)
    assert isinstance(listed, ListedTool)
    assert listed.annotations == {}
    assert set(listed.repairs) == {"invalid_field_dropped"}
    assert "annotations" in listed.repair_detail and "icons" in listed.repair_detail
    dropped = parse_tool(tool("u", {"type": "object"}, annotations=["x"]))
    assert isinstance(dropped, ListedTool) and dropped.repairs == ["annotations_dropped"]


def test_one_bad_tool_costs_only_itself_and_names_are_listed_once():
    good = tool("a", {"type": "object"})
    redefined = tool("a", {"type": "object", "properties": {}})
    pages = [[good, tool("b", {"type": "array"})], [good, redefined]]
    listing = build_listing(pages, ["stuck_cursor"])
    assert [t.name for t in listing.tools] == ["a"]
    assert [(r.name, r.reason) for r in listing.rejected] == [
        ("b", "input_schema_not_object"),
        ("a", "duplicate_name"),
    ]
    assert listing.notes == ["stuck_cursor", "duplicate_tool_names"]


def test_paging_stops_on_a_repeated_empty_or_odd_cursor():
    seen: set[str] = set()
    assert next_cursor({"tools": [], "nextCursor": "p2"}, seen) == ("p2", None)
    assert next_cursor({"tools": [], "nextCursor": "p2"}, seen) == (None, "stuck_cursor")
    assert next_cursor({"tools": [], "nextCursor": ""}, seen) == (None, None)
    assert next_cursor({"tools": []}, seen) == (None, None)
    assert next_cursor({"tools": [], "nextCursor": 7}, seen) == (None, "invalid_cursor")


@pytest.mark.parametrize("page", [{"tools": "none"}, ["not", "a", "page"], {"items": []}])
def test_a_page_that_is_not_a_tool_list_is_a_list_error(page):
    with pytest.raises(ToolListError) as caught:
        page_tools(page)
    assert caught.value.reason == "malformed_tool_list"


def test_a_schema_that_cannot_be_checked_says_so_instead_of_raising():
    assert check_instance(ITEM_REF, {"item": 1})[0] is False
    assert check_instance(BAD_TYPE, {})[0] is False
    checked, violation = check_instance({"type": "object", "required": ["a"]}, {})
    assert checked and violation
    assert check_instance({"type": "object", "required": ["a"]}, {"a": 1}) == (True, None)
