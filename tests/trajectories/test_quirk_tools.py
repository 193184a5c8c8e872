"""Trajectories on tools that used to end them as internal_error: a tool that declares an
outputSchema and returns no structured content, and a tool whose schema has a `$ref` to
nothing. The model's turn and the server's real answer are kept."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from mcp_env.pool import SessionPool
from mcp_env.specs import StdioSpec
from tasks.agent import AgentBudget, Toolbox
from tasks.agent.naming import ExposedTool
from tasks.trajectories import (
    BatchOptions,
    ServerEntry,
    TrajectoryBatch,
    generate_batch,
    plan_items,
)
from tests.fake_llm import FakeLlm
from tests.trajectories.helpers import agent_script, fake_settings, kept_task, server_row
from toucan.records import Trajectory

QUIRKS = Path(__file__).resolve().parents[1] / "servers" / "quirks"


def quirk_spec(config: str) -> StdioSpec:
    args = [str(QUIRKS / "rawserver.py"), str(QUIRKS / f"{config}.json")]
    return StdioSpec(name=config.replace("_", "-"), command=sys.executable, args=args)


def run_one(
    fake_llm: FakeLlm, tmp_path: Path, config: str, tool: str, arguments: dict[str, Any]
) -> Trajectory:
    """One function-calling trajectory whose model calls `tool` once, then answers."""
    server = server_row(quirk_spec(config))
    fake_llm.script([agent_script([[(tool, arguments)]])])
    settings = fake_settings(fake_llm.base_url, tmp_path / "t.duckdb")
    task = kept_task(f"Please use {tool}.", [server], [(server, tool)])[0]
    items = plan_items([task], ["Teacher-A"], ["function-calling"])
    batch = TrajectoryBatch(batch_id="b", server_ids=[server.server_id], items=items)
    options = BatchOptions(
        budget=AgentBudget(max_turns=4, wall_clock_s=60),
        token_budget=500,
        concurrency=1,
        mcp=settings.mcp,
        models=settings.models,
        run_id="run_test",
    )
    entry = ServerEntry(server_id=server.server_id, name=server.name, spec=server.spec)
    result = asyncio.run(generate_batch(batch, {server.server_id: entry}, options))
    [row] = result.trajectories
    return row


def test_a_result_without_its_structured_content_reaches_the_model(
    fake_llm: FakeLlm, tmp_path: Path
) -> None:
    row = run_one(fake_llm, tmp_path, "output_schema", "out_missing", {})
    assert (row.status, row.stop_reason) == ("ok", "final_answer")
    assert [m["role"] for m in row.messages] == ["system", "user", "assistant", "tool", "assistant"]
    assert row.messages[3]["content"] == "value is 7"
    [entry] = row.tool_call_log
    assert (entry.is_error, entry.notes) == (False, ["structured_content_missing"])
    offered = {tool["function"]["name"] for tool in row.tools}
    assert offered == {
        "out_no_type",
        "out_array",
        "out_missing",
        "out_ok",
        "out_ok_structured_only",
    }


def test_a_tool_with_a_ref_to_nothing_is_offered_repaired_and_called(
    fake_llm: FakeLlm, tmp_path: Path
) -> None:
    arguments = {"item": {"sku": "A-1"}, "qty": 2}
    row = run_one(fake_llm, tmp_path, "broken_ref", "add_item", arguments)
    assert (row.status, row.stop_reason) == ("ok", "final_answer")
    assert row.messages[3]["content"] == "add_item ok: " + json.dumps(arguments)
    [add_item] = [t for t in row.tools if t["function"]["name"] == "add_item"]
    assert add_item["function"]["parameters"]["properties"]["item"] == {}
    assert row.tool_call_log[0].notes == []  # the repaired schema could be checked


def test_a_call_whose_arguments_cannot_be_checked_still_goes_to_the_server() -> None:
    """A schema from an older store or another source, with its `$ref` still broken."""
    spec = quirk_spec("broken_ref")
    schema = {"type": "object", "properties": {"item": {"$ref": "#/$defs/Item"}}}
    exposed = ExposedTool(
        name="add_item",
        server_id=spec.server_id,
        server=spec.name,
        tool="add_item",
        description="Add an item to the cart.",
        input_schema=schema,
        schema_hash="h",
    )

    async def call() -> tuple[str, Any]:
        async with SessionPool(connect_timeout=60) as pool:
            pool.register(spec)
            toolbox = Toolbox("traj_1", [exposed], pool, token_budget=500, call_timeout=30)
            text = await toolbox.call("c1", "add_item", json.dumps({"item": 5}))
            return text, toolbox.log[0]

    text, entry = asyncio.run(call())
    assert text == 'add_item ok: {"item": 5}'
    assert (entry.is_error, entry.schema_violation, entry.notes) == (
        False,
        None,
        ["arguments_unchecked"],
    )
