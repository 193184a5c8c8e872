"""`toucan onboard` on servers that misbehave the way real ones do: every good tool is stored,
each bad one is shown with its reason, and a tool that broke since the last run is no longer
offered to synthesis."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from cli import app
from toucan.records import Tool
from toucan.store import Store

ROOT = Path(__file__).resolve().parents[2]
QUIRKS = ROOT / "tests" / "servers" / "quirks"


def raw_server(name: str, config: Path, **extra: object) -> dict[str, object]:
    args = [str(QUIRKS / "rawserver.py"), str(config)]
    return {"name": name, "command": sys.executable, "args": args, **extra}


def onboard(tmp_path: Path, servers: list[dict[str, object]], store: Path) -> dict[str, Any]:
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(yaml.safe_dump({"servers": servers}))
    config = tmp_path / "toucan.yaml"
    config.write_text(yaml.safe_dump({"onboard": {"retries": 0}}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOUCAN_")}
    command = [sys.executable, "-m", "cli", "onboard", "--catalog", str(catalog)]
    command += ["--config", str(config), "--store", str(store), "--json"]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return {row["name"]: row for row in json.loads(result.stdout)["servers"]}


def cli_json(*args: str) -> Any:
    result = CliRunner().invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def changing_config(tmp_path: Path, broken: bool) -> Path:
    """A server whose `lookup` tool is fine in one run and broken (array root) in the next."""
    lookup = {"type": "array"} if broken else {"type": "object", "properties": {}}
    tools = [
        {"name": "lookup", "inputSchema": lookup},
        {"name": "steady", "inputSchema": {"type": "object", "properties": {}}},
    ]
    path = tmp_path / ("broken.json" if broken else "fine.json")
    path.write_text(json.dumps({"tools": tools}))
    return path


@pytest.mark.slow
def test_quirky_servers_keep_their_good_tools_and_show_the_bad_ones(tmp_path: Path) -> None:
    store = tmp_path / "s.duckdb"
    servers = [
        raw_server(name, QUIRKS / f"{name}.json")
        for name in ("root_combinators", "untyped_noarg", "output_schema", "broken_ref")
    ]
    servers += [
        raw_server("stuck_cursor", QUIRKS / "stuck_cursor.json"),
        raw_server("read_only_probe", QUIRKS / "read_only_probe.json"),
        raw_server("changing", changing_config(tmp_path, broken=False)),
    ]
    rows = onboard(tmp_path, servers, store)
    expected_tools = {
        "root_combinators": 4,
        "untyped_noarg": 2,
        "output_schema": 5,
        "broken_ref": 2,
        "stuck_cursor": 3,
        "read_only_probe": 2,
        "changing": 2,
    }
    assert {name: (row["status"], row["tools"]) for name, row in rows.items()} == {
        name: ("ok", count) for name, count in expected_tools.items()
    }
    assert rows["stuck_cursor"]["notes"] == ["stuck_cursor", "duplicate_tool_names"]
    assert rows["read_only_probe"]["reason"] is None  # probed with its read-only tool
    assert rows["broken_ref"]["transport_used"] == "stdio"

    tools = cli_json("tools", "--store", str(store))
    repairs = {(t["server"], t["name"]): t.get("repairs") for t in tools}
    assert repairs[("untyped_noarg", "list_all")] == ["missing_root_type"]
    assert repairs[("broken_ref", "add_item")] == ["unresolved_ref"]
    assert repairs[("output_schema", "out_array")] == ["output_schema_dropped"]
    read_only = {t["name"] for t in tools if t.get("read_only")}
    assert read_only == {"server_info"}
    assert all(t["annotations"].get("readOnlyHint") is not None for t in tools if t["annotations"])

    rows = onboard(tmp_path, [raw_server("changing", changing_config(tmp_path, True))], store)
    assert (rows["changing"]["status"], rows["changing"]["tools"]) == ("ok", 1)
    assert [(t["name"], t["reason"]) for t in rows["changing"]["rejected_tools"]] == [
        ("lookup", "input_schema_not_object")
    ]
    shown = [t for t in cli_json("tools", "--store", str(store), "--server", "changing")]
    assert {(t["name"], t.get("status", "ok")) for t in shown} == {
        ("steady", "ok"),
        ("lookup", "rejected"),
    }
    current = {t.name for t in Store(store).select(Tool, "current")}
    assert "lookup" not in current and "steady" in current  # synthesis reads `current`
    [changing] = [s for s in cli_json("servers", "--store", str(store)) if s["name"] == "changing"]
    assert changing["rejected_tools"][0]["reason"] == "input_schema_not_object"
