from __future__ import annotations

from mcp_env.results import ListedTool
from mcp_env.specs import parse_server_spec
from tasks.domains import label_by_keywords, normalize_category
from tasks.onboard import ToolVersions, choose_domain, onboard_from_specs, tool_records
from toucan.config import DOMAIN_CATEGORIES
from toucan.ids import schema_hash

CATS = list(DOMAIN_CATEGORIES)


def listed(name: str, schema: dict) -> ListedTool:
    return ListedTool(name=name, input_schema=schema, schema_hash=schema_hash(schema))


def test_catalog_label_wins_when_it_names_a_category() -> None:
    spec = parse_server_spec({"name": "w", "command": "x", "domain": "weather"})
    assert choose_domain(spec, [], CATS) == ("Weather", "catalog")


def test_keyword_rule_labels_servers_without_a_catalog_label() -> None:
    spec = parse_server_spec({"name": "sqlite", "command": "x", "description": "SQL database"})
    assert choose_domain(spec, ["read_query run a SQL query"], CATS) == (
        "Database Operations",
        "keyword",
    )


def test_a_custom_label_is_not_a_category() -> None:
    assert normalize_category("Advanced Web Intelligence", CATS) is None
    assert label_by_keywords(["zzz"], CATS) is None


def test_a_changed_schema_becomes_the_next_version_and_an_unchanged_one_adds_nothing() -> None:
    v1 = {"type": "object", "properties": {"q": {"type": "string"}}}
    v2 = {"type": "object", "properties": {"q": {"type": "string"}, "n": {"type": "integer"}}}
    rows, superseded = tool_records("srv_1", [listed("search", v1)], ToolVersions(), "run")
    assert [(r.name, r.version) for r in rows] == [("search", 1)] and superseded == []
    known = ToolVersions(by_name={"search": {rows[0].schema_hash: 1}})
    assert tool_records("srv_1", [listed("search", v1)], known, "run") == ([], [])
    rows2, superseded2 = tool_records("srv_1", [listed("search", v2)], known, "run")
    assert [(r.name, r.version) for r in rows2] == [("search", 2)]
    assert superseded2 == ["search"] and rows2[0].tool_id != rows[0].tool_id


def test_specs_only_detects_credentials_and_keeps_declared_tools() -> None:
    spec = parse_server_spec(
        {
            "name": "gitlab",
            "transport": "streamable-http",
            "url": "https://example.invalid/mcp",
            "config": [{"name": "token", "required": True, "secret": True}],
            "tools": [{"name": "list_issues", "input_schema": {"type": "object"}}],
        }
    )
    outcome = onboard_from_specs(spec, CATS)
    assert outcome.server.status == "specs_only"
    assert outcome.server.needs_credentials == ["token"]
    assert [t.name for t in outcome.tools] == ["list_issues"]


def test_a_specs_only_entry_without_tools_is_rejected_with_a_reason() -> None:
    spec = parse_server_spec({"name": "empty", "transport": "sse", "url": "http://x/sse"})
    outcome = onboard_from_specs(spec, CATS)
    assert (outcome.server.status, outcome.server.reason) == ("rejected", "no_tools_declared")


def test_declared_tools_get_the_same_verdicts_as_listed_ones() -> None:
    tools = [
        {"name": "fine", "input_schema": {"type": "object", "properties": {}}},
        {"name": "untyped", "input_schema": {"properties": {}}},
        {"name": "array", "input_schema": {"type": "array"}},
        {"name": "fine", "input_schema": {"type": "object", "properties": {"x": {}}}},
    ]
    spec = parse_server_spec({"name": "declared", "url": "http://x/mcp", "tools": tools})
    outcome = onboard_from_specs(spec, CATS)
    assert {t.name: t.repairs for t in outcome.tools} == {
        "fine": [],
        "untyped": ["missing_root_type"],
    }
    rejected = [(t.name, t.reason) for t in outcome.server.rejected_tools]
    assert rejected == [("array", "input_schema_not_object"), ("fine", "duplicate_name")]
    assert (outcome.server.status, outcome.server.tool_count) == ("specs_only", 2)
    rows, _ = tool_records("srv_1", outcome.tools, ToolVersions(), "run")
    assert [row.repairs for row in rows] == [[], ["missing_root_type"]]


def test_a_specs_only_entry_whose_tools_are_all_unusable_is_rejected() -> None:
    tools = [{"name": "array", "input_schema": {"type": "array"}}]
    spec = parse_server_spec({"name": "bad", "url": "http://x/mcp", "tools": tools})
    outcome = onboard_from_specs(spec, CATS)
    assert (outcome.server.status, outcome.server.reason) == ("rejected", "no_usable_tools")
