"""Real servers that misbehave the way servers in the wild do (tests/servers/quirks): each
keeps every good tool, bad ones are rejected alone, and no call loses its result."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mcp_env.health import check_server
from mcp_env.pool import SessionPool
from mcp_env.session import open_session
from mcp_env.specs import StdioSpec
from tests.mcp_env.conftest import CONNECT_TIMEOUT_S
from tests.mcp_env.conftest import quirk_spec as shared_quirk_spec
from toucan.errors import ToolListError

pytestmark = pytest.mark.anyio

QUIRKS = Path(__file__).resolve().parents[1] / "servers" / "quirks"


def quirk_spec(config: str, log: Path | None = None, **fields: object) -> StdioSpec:
    return shared_quirk_spec(config, log, name=config.replace("_", "-"), **fields)


def sent_methods(log: Path) -> list[str]:
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    return [entry["recv"].get("method") for entry in entries if "recv" in entry]


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        (
            "root_combinators",
            {
                "find_user": [],
                "union_root": ["missing_root_type"],
                "allof_root": ["missing_root_type"],
                "oneof_root": [],
            },
        ),
        ("untyped_noarg", {"get_status": [], "list_all": ["missing_root_type"]}),
        (
            "output_schema",
            {
                "out_no_type": ["output_schema_dropped"],
                "out_array": ["output_schema_dropped"],
                "out_missing": [],
                "out_ok": [],
                "out_ok_structured_only": [],
            },
        ),
        ("broken_ref", {"add_item": ["unresolved_ref"], "legacy_defs": ["unresolved_ref"]}),
    ],
)
async def test_every_good_tool_is_kept_and_the_bad_parts_repaired(config, expected):
    async with open_session(quirk_spec(config), connect_timeout=CONNECT_TIMEOUT_S) as session:
        listing = await session.read_tool_listing()
    assert {tool.name: tool.repairs for tool in listing.tools} == expected
    assert listing.rejected == [] and listing.notes == []
    assert all(tool.input_schema["type"] == "object" for tool in listing.tools)


async def test_a_stuck_cursor_stops_the_listing_without_duplicates(tmp_path):
    log = tmp_path / "raw.log"
    async with open_session(
        quirk_spec("stuck_cursor", log), connect_timeout=CONNECT_TIMEOUT_S
    ) as s:
        listing = await s.read_tool_listing()
    assert [tool.name for tool in listing.tools] == ["stuck_000", "stuck_001", "stuck_002"]
    assert listing.notes == ["stuck_cursor", "duplicate_tool_names"]
    assert sent_methods(log).count("tools/list") == 2  # page 1, then the cursor seen again


async def test_a_page_that_is_not_a_tool_list_is_a_list_error():
    spec = quirk_spec("not_a_tool_list")
    async with open_session(spec, connect_timeout=CONNECT_TIMEOUT_S) as session:
        with pytest.raises(ToolListError) as caught:
            await session.read_tool_listing()
    assert caught.value.reason == "malformed_tool_list"
    async with SessionPool(connect_timeout=CONNECT_TIMEOUT_S) as pool:
        verdict = await check_server(spec, pool)
    assert (verdict.status, verdict.reason) == ("rejected", "malformed_tool_list")


async def test_results_that_miss_their_output_schema_are_kept_with_a_note():
    async with open_session(quirk_spec("output_schema"), connect_timeout=CONNECT_TIMEOUT_S) as s:
        # no listing first: the session lists by itself, tolerantly, before the first call
        missing = await s.call_tool("out_missing", {})
        results = {name: await s.call_tool(name, {}) for name in ("out_ok", "out_no_type")}
        structured_only = await s.call_tool("out_ok_structured_only", {})
    assert (missing.text, missing.is_error, missing.note) == (
        "value is 7",
        False,
        "structured_content_missing",
    )
    assert [(r.is_error, r.note) for r in results.values()] == [(False, None), (False, None)]
    assert results["out_ok"].text == '{"value": 42}'
    assert json.loads(structured_only.text) == {"value": 99}
    async with open_session(quirk_spec("output_mismatch"), connect_timeout=CONNECT_TIMEOUT_S) as s:
        await s.list_tools()
        wrong = await s.call_tool("out_wrong", {})
    assert (wrong.text, wrong.is_error, wrong.note) == (
        "value is seven",
        False,
        "output_schema_mismatch",
    )


async def test_pooled_calls_to_quirky_tools_return_results():
    async with SessionPool(connect_timeout=CONNECT_TIMEOUT_S) as pool:
        output_id = pool.register(quirk_spec("output_schema"))
        ref_id = pool.register(quirk_spec("broken_ref"))
        missing = await pool.call_tool(output_id, "out_missing", {})
        added = await pool.call_tool(ref_id, "add_item", {"item": {"sku": "A-1"}, "qty": 2})
        listing = await pool.tool_listing(ref_id)
    assert (missing.text, missing.note) == ("value is 7", "structured_content_missing")
    assert not added.is_error and added.text.startswith("add_item ok")
    assert [tool.repairs for tool in listing.tools] == [["unresolved_ref"], ["unresolved_ref"]]


async def test_annotations_keep_protocol_names_and_the_read_only_probe_runs(tmp_path):
    log = tmp_path / "raw.log"
    spec = quirk_spec("read_only_probe", log)
    async with SessionPool(connect_timeout=CONNECT_TIMEOUT_S) as pool:
        verdict = await check_server(spec, pool)
    annotations = {tool.name: tool.annotations for tool in verdict.tools}
    assert annotations["server_info"] == {
        "readOnlyHint": True,
        "openWorldHint": False,
        "title": "Server info",
    }
    assert annotations["delete_all"] == {"destructiveHint": True, "readOnlyHint": False}
    assert (verdict.status, verdict.probe_tool, verdict.probe_result) == (
        "ok",
        "server_info",
        "raw server 0.0.1",
    )
    assert sent_methods(log).count("tools/call") == 1  # the probe, and nothing destructive
