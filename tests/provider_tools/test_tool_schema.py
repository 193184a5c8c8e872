"""The normaliser on bad and unusual schemas: refs, roots, Gemini's subset, strict mode, names.
It never raises; what it changed is in its notes."""

from __future__ import annotations

from typing import Any

import pytest

from tasks.agent.naming import legal_name
from tasks.agent.strict_schema import drop_added_nulls
from tasks.agent.tool_schema import provider_definition
from tests.provider_tools.documented_rules import (
    DOCUMENTED,
    quirk_tools,
    request_violations,
)
from toucan.llm.tool_rules import OPENAI_STRICT, TOOL_RULES


def define(schema: Any, family: str = "anthropic") -> tuple[dict[str, Any], list[str]]:
    definition, notes = provider_definition("tool", "A tool.", schema, TOOL_RULES[family])  # type: ignore[index]
    return definition["function"]["parameters"], notes


def test_the_checker_flags_what_servers_send_unchanged() -> None:
    def raw(fixture: str) -> list[dict[str, Any]]:
        return [
            {"type": "function", "function": {"name": t["name"], "description": t["description"],
                                              "parameters": t["inputSchema"]}}
            for t in quirk_tools(fixture)
        ]  # fmt: skip

    assert "150 tools" in request_violations(raw("many_tools"), "openai")
    assert any(
        "description of 20000" in v for v in request_violations(raw("long_descriptions"), "openai")
    )
    assert any(
        "combinator at the root" in v
        for v in request_violations(raw("root_combinators"), "anthropic")
    )
    assert any("$ref" in v for v in request_violations(raw("broken_ref"), "openai_compatible"))
    assert any("not an object" in v for v in request_violations(raw("untyped_noarg"), "openai"))


def test_a_broken_ref_becomes_an_open_schema_that_says_so_and_its_siblings_are_kept() -> None:
    [add_item, legacy] = quirk_tools("broken_ref")
    parameters, notes = define(add_item["inputSchema"])
    assert notes == ["broken_ref"]
    assert "#/$defs/Item" in parameters["properties"]["item"]["description"]
    assert parameters["properties"]["qty"] == {"type": "integer"}
    assert parameters["required"] == ["item"]
    parameters, notes = define(legacy["inputSchema"], "gemini")
    assert notes == ["broken_ref"] and "order" in parameters["properties"]


def test_local_refs_are_inlined_and_definitions_removed() -> None:
    schema = {
        "type": "object",
        "properties": {"a": {"$ref": "#/$defs/A"}, "b": {"$ref": "#/definitions/x~1y"}},
        "$defs": {"A": {"type": "string", "description": "an a"}},
        "definitions": {"x/y": {"type": "integer"}},
    }
    parameters, notes = define(schema, "openai")
    assert parameters["properties"] == {
        "a": {"type": "string", "description": "an a"},
        "b": {"type": "integer"},
    }
    assert "$defs" not in parameters and "definitions" not in parameters and notes == []


@pytest.mark.parametrize(
    ("ref", "token"),
    [("#/$defs/Node", "recursive_ref"), ("https://example.com/s.json", "remote_ref")],
)
def test_recursive_and_remote_refs_end_in_open_schemas(ref: str, token: str) -> None:
    node = {"type": "object", "properties": {"child": {"$ref": ref}}}
    schema = {"type": "object", "properties": {"root": {"$ref": "#/$defs/Node"}}}
    schema["$defs"] = {"Node": node}
    parameters, notes = define(schema)
    child = parameters["properties"]["root"]["properties"]["child"]
    assert token in notes and "type" not in child and ref in child["description"]


def test_a_schema_that_explodes_when_inlined_or_nests_too_deep_is_cut_not_raised() -> None:
    defs = {f"D{i}": {"type": "object", "properties": {"a": {"$ref": f"#/$defs/D{i + 1}"},
                                                         "b": {"$ref": f"#/$defs/D{i + 1}"}}}
            for i in range(30)}  # fmt: skip
    defs["D30"] = {"type": "string"}
    _, notes = define(
        {"type": "object", "properties": {"x": {"$ref": "#/$defs/D0"}}, "$defs": defs}
    )
    assert "schema_too_large" in notes
    deep: dict[str, Any] = {"type": "string"}
    for _ in range(200):
        deep = {"type": "object", "properties": {"x": deep}}
    _, notes = define(deep)
    assert "schema_too_deep" in notes


@pytest.mark.parametrize(
    ("schema", "token"),
    [
        (None, "invalid_schema"),
        (["not", "a", "schema"], "invalid_schema"),
        ("string", "invalid_schema"),
        ({"type": "string"}, "non_object_root"),
        (
            {"type": ["object", "null"], "properties": {"a": {"type": "string"}}},
            "root_type_narrowed",
        ),
        ({"properties": {}}, "root_type_added"),
        ({"type": "object", "required": "a"}, "bad_required_dropped"),
        ({"anyOf": [{"type": "string"}, {"type": "number"}]}, "root_combinator_dropped"),
    ],
)
def test_a_root_that_is_not_an_object_becomes_one_with_a_note(schema: Any, token: str) -> None:
    for family in DOCUMENTED:
        parameters, notes = define(schema, family)
        assert parameters["type"] == "object" and token in notes


def test_gemini_gets_the_openapi_subset() -> None:
    schema = {
        "type": "object",
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "additionalProperties": False,
        "properties": {
            "name": {"type": ["string", "null"], "format": "uuid", "minLength": 1},
            "mode": {"const": "fast"},
            "level": {"type": "integer", "enum": [1, 2, 3], "exclusiveMinimum": 0},
            "tags": {"type": "array"},
            "meta": {"type": "object", "properties": {}},
            "when": {"anyOf": [{"type": "string", "format": "date-time"}, {"type": "null"}]},
            "pick": {"oneOf": [{"type": "string"}, {"type": "integer"}]},
        },
    }
    parameters, notes = define(schema, "gemini")
    properties = parameters["properties"]
    assert properties["name"] == {"type": "string", "nullable": True, "minLength": 1}
    assert properties["mode"] == {"enum": ["fast"]}
    assert properties["level"] == {"type": "integer"}
    assert properties["tags"] == {"type": "array", "items": {"type": "object"}}
    assert properties["meta"] == {"type": "object"}
    assert properties["when"] == {"type": "string", "format": "date-time", "nullable": True}
    assert properties["pick"] == {"anyOf": [{"type": "string"}, {"type": "integer"}]}
    assert set(parameters) == {"type", "properties"}
    assert {"keyword_dropped", "enum_dropped"} <= set(notes)


def test_strict_mode_closes_objects_and_makes_optional_properties_nullable() -> None:
    schema = {
        "type": "object",
        "properties": {
            "query": {"type": "string", "default": "x", "maxLength": 9},
            "limit": {"type": "integer"},
            "filter": {"type": "object", "properties": {"tag": {"enum": ["a", "b"]}}},
        },
        "required": ["query"],
    }
    definition, notes = provider_definition("search", "", schema, OPENAI_STRICT)
    function = definition["function"]
    assert function["strict"] is True and notes == []
    assert function["parameters"] == {
        "type": "object",
        "properties": {
            "query": {"type": "string"},
            "limit": {"type": ["integer", "null"]},
            "filter": {
                "type": ["object", "null"],
                "properties": {"tag": {"anyOf": [{"enum": ["a", "b"]}, {"type": "null"}]}},
                "required": ["tag"],
                "additionalProperties": False,
            },
        },
        "required": ["query", "limit", "filter"],
        "additionalProperties": False,
    }


@pytest.mark.parametrize(
    "sub",
    [
        {"type": "object"},  # free-form: closing it would forbid every key
        {"type": "object", "additionalProperties": {"type": "string"}},  # a map
        {"allOf": [{"type": "string"}, {"minLength": 2}]},
        {"description": "no type at all"},
    ],
)
def test_a_schema_strict_mode_cannot_say_is_offered_without_strict(sub: dict[str, Any]) -> None:
    schema = {"type": "object", "properties": {"x": sub}}
    definition, notes = provider_definition("t", "", schema, OPENAI_STRICT)
    assert "strict" not in definition["function"] and notes[-1] == "strict_unsupported"
    assert definition["function"]["parameters"]["properties"]["x"] == sub


def test_nulls_a_strict_model_sends_for_optional_arguments_are_dropped_for_the_server() -> None:
    schema = {
        "type": "object",
        "properties": {
            "a": {"type": "string"},
            "b": {"type": "string"},
            "c": {"type": ["string", "null"]},
        },
        "required": ["a"],
    }
    assert drop_added_nulls({"a": None, "b": None, "c": None, "d": 1}, schema) == {
        "a": None,
        "c": None,
        "d": 1,
    }


@pytest.mark.parametrize("family", ["gemini", "openai", "anthropic"])
@pytest.mark.parametrize("name", ["3d-render", "-lead", "get weather", "x" * 100, "ok_name"])
def test_names_are_made_legal_for_each_provider(family: str, name: str) -> None:
    legal = legal_name(name, f"srv/{name}", TOOL_RULES[family])  # type: ignore[index]
    assert DOCUMENTED[family]["name"].match(legal)
    assert (legal == name) == bool(DOCUMENTED[family]["name"].match(name))  # legal names stay


def test_the_lifted_alternatives_stay_in_a_cut_description_and_the_whole_fits_the_limit() -> None:
    [union] = [t for t in quirk_tools("root_combinators") if t["name"] == "union_root"]
    rules = TOOL_RULES["openai"]
    definition, notes = provider_definition("u", "word " * 400, union["inputSchema"], rules)
    description = definition["function"]["description"]
    assert len(description) <= 1024 and description.endswith("(1) city; (2) lat, lon.")
    assert "description_cut" in notes
    tight, _ = provider_definition("u", "Find it.", union["inputSchema"], rules, 20)
    assert len(tight["function"]["description"]) <= 20
