"""Issue 15, fault 7: bounded inputs. A catalog or a server with a 5 MB description and a 1 MB
schema: the description is cut and the row says so, the schema's tool is rejected with a
reason; files, entries and names over their caps are rejected (mcp_env/limits.py)."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from flows.runner import run_stage_async
from mcp_env.catalog import load_catalog
from mcp_env.listing import build_listing
from tasks.onboard import listing_from_specs
from tests.mcp_env.conftest import QUIRKS
from toucan.config import LimitsConfig, load_settings
from toucan.records import Server, Tool
from toucan.store import Store

FIVE_MB = "A tool that does a great many things. " * (5 * 2**20 // 38)
CAP = LimitsConfig().description_chars


def one_mb_schema() -> dict[str, Any]:
    properties = {f"field_{n}": {"type": "string", "description": "x" * 100} for n in range(8_000)}
    return {"type": "object", "properties": properties}


def huge_tools() -> list[dict[str, Any]]:
    """As a server lists them: a 5 MB description, a 1 MB schema, and a plain tool."""
    plain = {"type": "object", "properties": {"text": {"type": "string"}}}
    return [
        {"name": "long_story", "description": FIVE_MB, "inputSchema": plain},
        {"name": "wide_form", "description": "Fill a form.", "inputSchema": one_mb_schema()},
        {"name": "echo", "description": "Echo.", "inputSchema": plain},
    ]


def as_declared(tool: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": tool["name"],
        "description": tool["description"],
        "input_schema": tool["inputSchema"],
    }


def test_a_catalog_with_a_5_mb_description_and_a_1_mb_schema_is_cut_and_rejected_by_part(
    tmp_path: Path,
) -> None:
    entry = {
        "name": "huge",
        "command": sys.executable,
        "description": FIVE_MB,
        "tools": [as_declared(tool) for tool in huge_tools()],
    }
    path = tmp_path / "catalog.json"
    path.write_text(json.dumps({"servers": [entry]}))

    [spec] = load_catalog(path).specs

    assert len(spec.description) == CAP and spec.catalog_notes == ["description_cut"]
    listing = listing_from_specs(spec.tools)
    tools = {tool.name: tool for tool in listing.tools}
    assert set(tools) == {"long_story", "echo"}
    assert len(tools["long_story"].description) == CAP
    assert tools["long_story"].repairs == ["description_cut"]
    assert [(t.name, t.reason) for t in listing.rejected] == [("wide_form", "schema_too_large")]


def test_files_entries_and_names_over_their_caps_are_rejected_and_extra_tools_cut(
    tmp_path: Path,
) -> None:
    entries = [
        {"name": "fine", "command": "x", "tools": [{"name": f"t{n}"} for n in range(3)]},
        {"name": "n" * 300, "command": "x"},
        {"name": "bulky", "command": "x", "description": "d" * 3_000},
    ]
    catalog = tmp_path / "catalog.json"
    catalog.write_text(json.dumps({"servers": entries}))
    lines = tmp_path / "catalog.jsonl"
    lines.write_text("\n".join(json.dumps(entry) for entry in entries))
    limits = LimitsConfig(catalog_entry_bytes=2_000, tools_per_server=2)

    for path in (catalog, lines):
        loaded = load_catalog(path, limits)
        assert [(s.name, s.catalog_notes, len(s.tools)) for s in loaded.specs] == [
            ("fine", ["tools_cut"], 2)
        ]
        assert sorted(r.reason for r in loaded.rejections) == ["entry_too_large", "name_too_long"]
        assert all(len(r.name or "") <= limits.name_chars for r in loaded.rejections)
    too_big = load_catalog(catalog, LimitsConfig(catalog_file_bytes=100))
    assert [r.reason for r in too_big.rejections] == ["file_too_large"] and not too_big.specs
    listing = build_listing([[{"name": "x" * 300}, {"name": "ok"}]], limits=limits)
    assert [t.name for t in listing.tools] == ["ok"]
    assert [r.reason for r in listing.rejected] == ["name_too_long"]


def test_a_live_server_listing_a_5_mb_description_and_a_1_mb_schema_is_onboarded_within_caps(
    tmp_path: Path,
) -> None:
    server_config = tmp_path / "huge.json"
    server_config.write_text(json.dumps({"name": "huge", "tools": huge_tools()}))
    entry = {
        "name": "huge-live",
        "command": sys.executable,
        "args": [str(QUIRKS / "rawserver.py"), str(server_config)],
        "description": FIVE_MB,
    }
    catalog = tmp_path / "catalog.json"
    catalog.write_text(json.dumps({"servers": [entry]}))
    store = Store(tmp_path / "s.duckdb")
    settings = load_settings(None, profile="cloud", overrides={"onboard": {"retries": 0}})

    asyncio.run(run_stage_async("onboard", settings, store, catalogs=[str(catalog)]))

    [server] = store.select(Server)
    assert server.status == "ok", server.detail
    assert "description_cut" in server.notes and len(server.description) == CAP
    assert [(t.name, t.reason) for t in server.rejected_tools] == [
        ("wide_form", "schema_too_large")
    ]
    tools = {tool.name: tool for tool in store.select(Tool)}
    assert set(tools) == {"long_story", "echo"}
    assert len(tools["long_story"].description) == CAP
    assert "description_cut" in tools["long_story"].repairs


@pytest.mark.parametrize("field", ["catalog_file_bytes", "description_chars", "schema_bytes"])
def test_a_cap_below_one_is_a_config_error(field: str) -> None:
    with pytest.raises(ValueError):
        LimitsConfig(**{field: 0})
