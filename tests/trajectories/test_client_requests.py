"""Trajectories against servers that talk back (tests/servers/quirks) and the fake model:
sampling and elicitation answered and recorded, tool-list changes followed, progress."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import mcp_types as types
import pytest

from flows.onboard import store_tool_versions
from flows.runner import run_stage_async
from mcp_env.client_callbacks import to_sampling_request
from mcp_env.server_requests import SamplingReply
from mcp_env.session import open_session
from tasks.agent import AgentBudget
from tasks.agent.server_requests import TrajectoryResponder
from tasks.trajectories import (
    BatchResult,
    plan_items,
)
from tests.fake_llm import FakeLlm, Rule
from tests.mcp_env.conftest import CONNECT_TIMEOUT_S, quirk_spec
from tests.trajectories.helpers import (
    agent_script,
    fake_settings,
    kept_task,
    run_server_batch,
    seed_store,
    server_row,
)
from toucan.llm.replies import CallMeta
from toucan.llm.router import LlmRouter
from toucan.records import Tool, Trajectory
from toucan.store import Store

SAMPLED = "hello, summarised"


def run_quirk(
    fake_llm: FakeLlm,
    tmp_path: Path,
    config: str,
    rules: list[Rule],
    targets: list[str],
    replay: dict[str, dict[str, Any]] | None = None,
    **mcp: Any,
) -> tuple[Trajectory, BatchResult]:
    """One function-calling trajectory on one quirk server; the row and the batch result.
    `replay` holds recorded tool results (call key -> result), as on a resume."""
    server = server_row(quirk_spec(config))
    fake_llm.script(rules)
    settings = fake_settings(
        fake_llm.base_url, tmp_path / "t.duckdb", mcp={"connect_timeout_s": 60, **mcp}
    )
    task, _ = kept_task(
        "Please tidy up my project notes.", [server], [(server, t) for t in targets]
    )
    result = run_server_batch(
        server,
        plan_items([task], ["Teacher-A"], ["function-calling"]),
        settings,
        replay=replay,
        budget=AgentBudget(max_turns=4, wall_clock_s=90),
        run_id="run_test",
    )
    [row] = result.trajectories
    return row, result


def run_sampling(
    fake_llm: FakeLlm, tmp_path: Path, replay: dict[str, dict[str, Any]] | None = None
) -> tuple[Trajectory, BatchResult]:
    """The agent calls summarise_with_llm once; the server's sampling request gets SAMPLED."""
    rules = [
        Rule(contains="Summarise: hello", text=SAMPLED),
        agent_script([[("summarise_with_llm", {})]]),
    ]
    return run_quirk(
        fake_llm, tmp_path, "sampling_elicitation.json", rules, ["summarise_with_llm"], replay
    )


def test_sampling_is_answered_by_the_teacher_and_recorded_with_its_call(
    fake_llm: FakeLlm, tmp_path: Path
) -> None:
    row, result = run_sampling(fake_llm, tmp_path)
    assert row.status == "ok" and row.stop_reason == "final_answer"
    [tool_message] = [m for m in row.messages if m["role"] == "tool"]
    assert SAMPLED in tool_message["content"]
    [exchange] = row.metadata["server_requests"]
    assert exchange["kind"] == "sampling" and exchange["error_reason"] is None
    assert exchange["call_id"] == tool_message["tool_call_id"] == row.tool_call_log[0].call_id
    assert exchange["answered_by"] == "Teacher-A" and exchange["in_flight"] == 1
    assert exchange["response"]["content"] == {"type": "text", "text": SAMPLED}
    assert exchange["request"]["messages"][0]["content"]["text"] == "Summarise: hello"
    assert row.tool_call_log[0].server_requests == 1
    sampling_request = next(r for r in fake_llm.requests if "tools" not in r)
    assert sampling_request["max_tokens"] == 50
    assert sampling_request["messages"] == [{"role": "user", "content": "Summarise: hello"}]
    assert row.usage.server_request_tokens > 0
    events = [e for e in result.events if e.kind == "sampling"]
    assert [(e.status, e.model) for e in events] == [("ok", "Teacher-A")]
    assert [m["role"] for m in row.messages] == ["system", "user", "assistant", "tool", "assistant"]


@pytest.mark.parametrize(
    ("policy", "response", "answered_by"),
    [
        ("simulated_user", {"action": "accept", "content": {"ok": True}}, "Gen"),
        ("accept_defaults", {"action": "accept", "content": {}}, "accept_defaults"),
        ("decline", {"action": "decline"}, "decline"),
    ],
)
def test_elicitation_is_answered_by_the_configured_policy_and_recorded(
    fake_llm: FakeLlm, tmp_path: Path, policy: str, response: dict[str, Any], answered_by: str
) -> None:
    rules = [
        Rule(
            contains="Please confirm the deletion",
            answer={"action": "accept", "content": {"ok": True}},
        ),
        agent_script([[("confirm_delete", {})]]),
    ]
    row, result = run_quirk(
        fake_llm,
        tmp_path,
        "sampling_elicitation.json",
        rules,
        ["confirm_delete"],
        elicitation={"policy": policy},
    )
    [exchange] = row.metadata["server_requests"]
    assert exchange["kind"] == "elicitation"
    assert (exchange["response"], exchange["answered_by"]) == (response, answered_by)
    [tool_message] = [m for m in row.messages if m["role"] == "tool"]
    assert f'"action": "{response["action"]}"' in tool_message["content"]
    asked_the_user = [r for r in fake_llm.requests if "Please confirm" in str(r["messages"])]
    assert len(asked_the_user) == (1 if policy == "simulated_user" else 0)
    if asked_the_user:  # the simulated user knows what they asked for
        assert "Please tidy up my project notes." in str(asked_the_user[0]["messages"])
    assert [e.kind for e in result.events if e.kind == "elicitation"] == ["elicitation"]


def test_a_long_tool_that_reports_progress_outlives_the_call_timeout_and_a_silent_one_does_not(
    fake_llm: FakeLlm, tmp_path: Path
) -> None:
    rules = [agent_script([[("long_job", {}), ("silent_job", {})]])]
    row, _ = run_quirk(
        fake_llm,
        tmp_path,
        "progress_short.json",
        rules,
        ["long_job", "silent_job"],
        call_timeout_s=1.5,
        call_timeout_max_s=10,
    )
    by_tool = {entry.tool: entry for entry in row.tool_call_log}
    assert not by_tool["long_job"].is_error
    assert by_tool["silent_job"].error_reason == "tool_timeout"


def tool_names(request: dict[str, Any]) -> set[str]:
    return {tool["function"]["name"] for tool in request.get("tools") or []}


def test_after_list_changed_the_next_turn_offers_the_new_tools_and_the_store_versions_them(
    fake_llm: FakeLlm, tmp_path: Path
) -> None:
    spec = quirk_spec("list_changed.json")
    server = server_row(spec)
    store = Store(tmp_path / "t.duckdb")
    task = kept_task("Log me in and clean up.", [server], [(server, "login"), (server, "new_tool")])
    seed_store(store, [server], [task])

    async def onboard_tools() -> None:  # what onboarding stored: the first listing
        async with open_session(spec, connect_timeout=CONNECT_TIMEOUT_S) as session:
            store_tool_versions(store, {server.server_id: await session.list_tools()}, "onboard")

    asyncio.run(onboard_tools())
    fake_llm.script(
        [agent_script([[("login", {})], [("old_tool", {"a": "x"}), ("new_tool", {"b": "y"})]])]
    )
    settings = fake_settings(fake_llm.base_url, store.path, mcp={"connect_timeout_s": 60})
    asyncio.run(run_stage_async("trajectories", settings, store))

    [row] = store.select(Trajectory)
    offered = [tool_names(r) for r in fake_llm.requests]
    assert offered == [{"login", "old_tool"}, {"login", "new_tool"}, {"login", "new_tool"}]
    login = next(t for t in fake_llm.requests[1]["tools"] if t["function"]["name"] == "login")
    assert "user" in login["function"]["parameters"]["properties"]
    by_tool = {entry.name: entry for entry in row.tool_call_log}
    assert by_tool["old_tool"].error_reason == "tool_removed"
    assert not by_tool["new_tool"].is_error
    [change] = row.metadata["tool_list_changes"]
    assert (change["added"], change["removed"], change["changed"]) == (
        ["new_tool"],
        ["old_tool"],
        ["login"],
    )
    assert change["before_turn"] == 1
    assert {t["function"]["name"] for t in row.tools} == {"login", "old_tool", "new_tool"}
    assert set(row.tool_name_map) == {"login", "old_tool", "new_tool"}
    versions = {(t.name, t.version, t.current) for t in store.select(Tool)}
    assert versions == {
        ("login", 1, False),
        ("login", 2, True),
        ("old_tool", 1, True),
        ("new_tool", 1, True),
    }


def test_a_resumed_trajectory_keeps_the_sampling_exchange_of_its_replayed_call(
    fake_llm: FakeLlm, tmp_path: Path
) -> None:
    first, result = run_sampling(fake_llm, tmp_path)
    replay = {record.call_key: record.result for record in result.tool_calls}
    assert all(result["server_requests"] for result in replay.values())
    resumed, again = run_sampling(fake_llm, tmp_path, replay)
    sampled = [r for r in fake_llm.requests if "tools" not in r]
    assert len(sampled) == 1, "the replayed call must not ask the model again"
    [exchange] = resumed.metadata["server_requests"]
    assert (
        exchange["replayed"]
        and exchange["response"] == first.metadata["server_requests"][0]["response"]
    )
    assert exchange["call_id"] == resumed.tool_call_log[0].call_id
    assert resumed.tool_call_log[0].replayed
    assert not [e for e in again.events if e.kind == "sampling"]


def test_a_sampling_model_that_fails_is_an_error_for_the_server_and_on_the_row(
    fake_llm: FakeLlm, tmp_path: Path
) -> None:
    rules = [
        Rule(contains="Summarise: hello", status=400),
        agent_script([[("summarise_with_llm", {})]]),
    ]
    row, result = run_quirk(
        fake_llm, tmp_path, "sampling_elicitation.json", rules, ["summarise_with_llm"]
    )
    assert row.status == "ok" and row.stop_reason == "final_answer"
    [exchange] = row.metadata["server_requests"]
    assert exchange["error_reason"].startswith("sampling_") and exchange["response"] is None
    [tool_message] = [m for m in row.messages if m["role"] == "tool"]
    assert (
        '"error"' in tool_message["content"] and exchange["error_reason"] in tool_message["content"]
    )
    assert [e.status for e in result.events if e.kind == "sampling"] == ["error"]


def test_a_simulated_user_reply_that_breaks_the_form_is_sent_as_cancel(
    fake_llm: FakeLlm, tmp_path: Path
) -> None:
    rules = [
        Rule(contains="Please confirm", answer={"action": "accept", "content": {"ok": "yes"}}),
        agent_script([[("confirm_delete", {})]]),
    ]
    row, _ = run_quirk(fake_llm, tmp_path, "sampling_elicitation.json", rules, ["confirm_delete"])
    [exchange] = row.metadata["server_requests"]
    assert exchange["response"] == {"action": "cancel"}
    assert exchange["error_reason"] == "invalid_user_reply"


def test_a_model_hint_picks_the_teacher_it_names(fake_llm: FakeLlm, tmp_path: Path) -> None:
    hinted = {
        "messages": [{"role": "user", "content": {"type": "text", "text": "Summarise: hello"}}],
        "maxTokens": 50,
        "modelPreferences": {"hints": [{"name": "teacher-b"}]},
    }
    settings = fake_settings(
        fake_llm.base_url, tmp_path / "t.duckdb", teachers=("Teacher-A", "Teacher-B")
    )
    router = LlmRouter(settings.models)
    responder = TrajectoryResponder(router, "Teacher-A", CallMeta(), settings.mcp, "question")
    request = to_sampling_request(types.CreateMessageRequestParams.model_validate(hinted))
    fake_llm.script([Rule(model="Teacher-B", text=SAMPLED)])

    async def sample() -> SamplingReply:
        try:
            return await responder.sample(request)
        finally:
            await router.aclose()

    reply = asyncio.run(sample())
    unhinted = request.model_copy(update={"model_hints": ["gpt-9"]})
    assert responder.sampling_target(unhinted.model_hints) == "Teacher-A"
    assert (reply.answered_by, reply.text) == ("Teacher-B", SAMPLED)
