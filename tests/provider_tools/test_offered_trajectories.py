"""Trajectories against real quirky MCP servers (stdio) and the fake model server over HTTP:
the request the model receives meets its provider's limits, the target tool is offered, and
the row keeps both what was offered and what the server declared, through the store and the
export."""

from __future__ import annotations

import asyncio
import json
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mcp_env.specs import StdioSpec
from tasks.agent import AgentBudget
from tasks.chat_formats import to_openai_chat, to_sharegpt_hermes
from tasks.export import ExportSource, build_export_row
from tasks.scrub import Scrubber
from tasks.trajectories import BatchOptions, ServerEntry, TrajectoryBatch, generate_batch
from tasks.trajectory_records import plan_items
from tests.fake_llm import FakeLlm, fake_llm
from tests.provider_tools.documented_rules import QUIRKS, quirk_tools, request_violations
from tests.trajectories.helpers import agent_script, deployment, kept_task, server_row
from toucan.config import load_settings
from toucan.records import Trajectory, TrajectoryRating
from toucan.store import Store

__all__ = ["fake_llm"]
RAW_SERVER = QUIRKS / "rawserver.py"


@pytest.fixture(autouse=True)
def quiet_litellm_typeddict_warning() -> Iterator[None]:
    """LiteLLM's Router declares TypedDicts with `ReadOnly` items; pydantic warns once."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*`ReadOnly` qualifier", category=UserWarning)
        yield


def run_quirk_server(
    fake_llm: FakeLlm,
    tmp_path: Path,
    fixture: str,
    target: str,
    arguments: dict[str, Any],
    **teacher: Any,
) -> Trajectory:
    """One function-calling trajectory on the fixture's server; the model calls `target`."""
    spec = StdioSpec(
        name=fixture,
        command=sys.executable,
        args=[str(RAW_SERVER), str(QUIRKS / f"{fixture}.json")],
    )
    server = server_row(spec)
    fake_llm.script([agent_script([[(target, arguments)]])])
    models = {
        "generators": [deployment("Gen", fake_llm.base_url)],
        "teachers": [deployment("Teacher-A", fake_llm.base_url, tool_rules="openai", **teacher)],
        "judge": [deployment("Judge", fake_llm.base_url)],
    }
    settings = load_settings(None, profile="cloud", overrides={"models": models})
    task, _ = kept_task(f"Run {target}", [server], [(server, target)])
    items = plan_items([task], ["Teacher-A"], ["function-calling"])
    options = BatchOptions(
        budget=AgentBudget(max_turns=3, wall_clock_s=60),
        mcp=settings.mcp,
        models=settings.models,
        run_id="run_offer",
    )
    entry = ServerEntry(server_id=server.server_id, name=server.name, spec=server.spec)
    batch = TrajectoryBatch(batch_id="b", server_ids=[server.server_id], items=items)
    result = asyncio.run(generate_batch(batch, {server.server_id: entry}, options))
    [row] = result.trajectories
    assert row.status == "ok" and row.stop_reason == "final_answer", row.metadata
    return row


def test_a_150_tool_server_is_offered_within_openais_limit_with_the_target(
    fake_llm: FakeLlm, tmp_path: Path
) -> None:
    row = run_quirk_server(fake_llm, tmp_path, "many_tools", "op_149", {"arg": "x"})
    sent = fake_llm.requests[0]["tools"]
    assert request_violations(sent, "openai") == []
    assert len(sent) == 128 and "op_149" in {t["function"]["name"] for t in sent}
    assert row.tools == sent  # the row holds exactly what the model received
    server_side = {t["name"]: t for t in quirk_tools("many_tools")}
    assert set(row.original_tools) == {t["function"]["name"] for t in sent}
    assert all(
        o["inputSchema"] == server_side[o["name"]]["inputSchema"]
        for o in row.original_tools.values()
    )
    offer = row.metadata["tool_offer"]
    assert (offer["rules"], offer["available"], offer["offered"]) == ("openai", 150, 128)
    assert row.tool_call_log[0].tool == "op_149" and not row.tool_call_log[0].is_error


def test_long_descriptions_fit_openais_limit_in_the_request_the_store_and_the_export(
    fake_llm: FakeLlm, tmp_path: Path
) -> None:
    row = run_quirk_server(fake_llm, tmp_path, "long_descriptions", "report_1", {"region": "EU"})
    sent = fake_llm.requests[0]["tools"]
    assert request_violations(sent, "openai") == [] and len(sent) == 3
    store = Store(tmp_path / "s.duckdb")
    store.insert([row])
    [stored] = store.select(Trajectory)
    assert stored.tools == sent
    assert {len(o["description"]) for o in stored.original_tools.values()} == {20_000}
    rating = TrajectoryRating(
        rating_id="r", trajectory_id=row.trajectory_id, judge="Judge", keep=True
    )
    task, _ = kept_task("Run report_1", [], [])
    exported = build_export_row(
        ExportSource(trajectory=stored, task=task, trajectory_rating=rating), Scrubber()
    )
    available = json.loads(exported.available_tools)
    assert request_violations(available, "openai") == []
    messages = json.loads(exported.messages)
    for formatted in (to_openai_chat(messages, available), to_sharegpt_hermes(messages, available)):
        tools = formatted["tools"]
        assert (
            request_violations(json.loads(tools) if isinstance(tools, str) else tools, "openai")
            == []
        )


def test_a_strict_teacher_gets_strict_tools_and_the_server_never_sees_the_added_nulls(
    fake_llm: FakeLlm, tmp_path: Path
) -> None:
    row = run_quirk_server(
        fake_llm, tmp_path, "many_tools", "op_001", {"arg": None}, strict_tools=True
    )
    sent = fake_llm.requests[0]["tools"]
    assert request_violations(sent, "openai") == [] and len(sent) == 128
    [op] = [t["function"] for t in sent if t["function"]["name"] == "op_001"]
    assert op["strict"] is True and op["parameters"]["required"] == ["arg"]
    assert op["parameters"]["properties"]["arg"] == {"type": ["string", "null"]}
    [call] = row.tool_call_log
    assert call.arguments == {}  # the server got what it would have been sent
    assert row.messages[2]["tool_calls"][0]["function"]["arguments"] == '{"arg": null}'
