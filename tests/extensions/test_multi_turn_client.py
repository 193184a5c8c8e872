"""Multi-turn conversations on servers that talk back: a tool-list change in one user turn is
offered in the next, and a server's sampling request is answered and recorded."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from flows.runner import run_stage_async
from tests.fake_llm import FakeLlm, Rule
from tests.mcp_env.conftest import quirk_spec
from tests.trajectories.conftest import quiet_litellm_typeddict_warning
from tests.trajectories.helpers import fake_settings, kept_task, seed_store, server_row
from toucan.records import Tool, Trajectory
from toucan.store import Store

__all__ = ["quiet_litellm_typeddict_warning"]
SPLIT_MARK = "sequential user messages"
TURN_CALLS = {
    "log me in": ("login", {}),
    "new tool": ("new_tool", {"b": "notes"}),
    "summary": ("summarise_with_llm", {}),
}


def fake_model(request: dict[str, Any]) -> Any:
    """The splitter, the server's sampling request, and an agent calling one tool per turn."""
    messages = request["messages"]
    last = str(messages[-1].get("content"))
    if SPLIT_MARK in last:
        first, second = ("log me in", "new tool") if "Log" in last else ("summary", "summary")
        return {"sub_questions": [f"First, {first} please.", f"Then use the {second} again."]}
    if last == "Summarise: hello":
        return Rule(text="hello, summarised")
    if messages[-1]["role"] == "tool":
        return Rule(text=f"Done: {messages[-1]['content'][:40]}")
    marker = next(m for m in TURN_CALLS if m in last)
    return Rule(tool_calls=[TURN_CALLS[marker]])


def run_split(tmp_path: Path, config: str, question: str, targets: list[str]) -> tuple:
    server = server_row(quirk_spec(config))
    task = kept_task(question, [server], [(server, target) for target in targets])
    store = Store(tmp_path / "toucan.duckdb")
    seed_store(store, [server], [task])
    with FakeLlm(default=fake_model) as fake:
        settings = fake_settings(fake.base_url, store.path, mcp={"connect_timeout_s": 60})
        asyncio.run(run_stage_async("multi_turn", settings, store, methods=["split"]))
        requests = list(fake.requests)
    [row] = store.select(Trajectory, "kind = 'multi_turn'")
    return row, requests, store


def offered(request: dict[str, Any]) -> set[str]:
    return {tool["function"]["name"] for tool in request.get("tools") or []}


def test_a_tool_list_change_in_one_user_turn_is_offered_in_the_next(tmp_path: Path) -> None:
    row, requests, store = run_split(
        tmp_path, "list_changed.json", "Log me in, then tidy my notes.", ["login", "new_tool"]
    )
    assert row.status == "ok" and row.completed_turns == 2, row.metadata
    agent_turns = [offered(r) for r in requests if r.get("tools")]
    assert agent_turns[0] == {"login", "old_tool"}
    assert agent_turns[-1] == {"login", "new_tool"}
    assert not any(e.is_error for e in row.tool_call_log)
    [change] = row.metadata["tool_list_changes"]
    assert (change["added"], change["removed"]) == (["new_tool"], ["old_tool"])
    assert {t["function"]["name"] for t in row.tools} == {"login", "old_tool", "new_tool"}
    assert ("new_tool", 1) in {(t.name, t.version) for t in store.select(Tool)}


def test_sampling_in_a_conversation_is_answered_and_recorded_per_call(tmp_path: Path) -> None:
    row, _, _ = run_split(
        tmp_path,
        "sampling_elicitation.json",
        "Summarise the notes, then summarise them again.",
        ["summarise_with_llm", "confirm_delete"],
    )
    assert row.status == "ok", row.metadata
    exchanges = row.metadata["server_requests"]
    assert [e["kind"] for e in exchanges] == ["sampling", "sampling"]
    call_ids = [e.call_id for e in row.tool_call_log]
    assert [e["call_id"] for e in exchanges] == call_ids
    assert all(e["response"]["content"]["text"] == "hello, summarised" for e in exchanges)
    assert all("hello, summarised" in m["content"] for m in row.messages if m["role"] == "tool")
