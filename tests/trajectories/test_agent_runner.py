"""The agent runner against the fake model server and a tiny real MCP server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tasks.agent import STYLES, AgentBudget, AgentJob, AgentRun, AgentStyle, check_styles
from tasks.trajectories import (
    plan_items,
)
from tests.fake_llm import FakeLlm, Rule
from tests.trajectories.helpers import (
    agent_script,
    fake_settings,
    kept_task,
    react_script,
    run_server_batch,
    server_row,
    tiny_spec,
)
from toucan.errors import ConfigError
from toucan.records import Trajectory


def run_tiny(
    fake_llm: FakeLlm,
    tmp_path: Path,
    rule: Rule | list[Rule],
    *,
    style: str = "function-calling",
    budget: AgentBudget | None = None,
    call_timeout: float = 20.0,
    questions: list[str] | None = None,
    per_server: int = 4,
) -> tuple[list[Trajectory], Path, Any]:
    """One batch of trajectories (one per question) on a tiny server; returns rows in
    question order, the server's call log and the batch result."""
    log = tmp_path / "calls.log"
    spec = tiny_spec(log)
    server = server_row(spec)
    fake_llm.script(rule if isinstance(rule, list) else [rule])
    settings = fake_settings(
        fake_llm.base_url,
        tmp_path / "t.duckdb",
        mcp={"call_timeout_s": call_timeout, "per_server_concurrency": per_server},
    )
    questions = questions or ["question 0"]
    tasks = [kept_task(q, [server], [(server, "echo")])[0] for q in questions]
    result = run_server_batch(
        server,
        plan_items(tasks, ["Teacher-A"], [style]),
        settings,
        budget=budget or AgentBudget(max_turns=5, wall_clock_s=60),
        token_budget=500,
        concurrency=8,
        run_id="run_test",
    )
    by_question = {row.metadata["question"]: row for row in result.trajectories}
    return [by_question[q] for q in questions], log, result


def test_function_calling_runs_parallel_calls_concurrently_and_records_real_results(
    fake_llm: FakeLlm, tmp_path: Path
) -> None:
    calls = [[("slow", {"seconds": 1.0}), ("slow", {"seconds": 1.0}), ("add", {"a": 2, "b": 3})]]
    [row], log, result = run_tiny(fake_llm, tmp_path, agent_script(calls))
    assert row.status == "ok" and row.stop_reason == "final_answer"
    assert row.turns == 2 and row.tool_calls == 3 and row.tool_errors == 0
    roles = [m["role"] for m in row.messages]
    assert roles == ["system", "user", "assistant", "tool", "tool", "tool", "assistant"]
    assert [m["content"] for m in row.messages[3:6]] == ["slept 1.0", "slept 1.0", "5"]
    slow = [e.latency_ms for e in row.tool_call_log if e.tool == "slow"]
    assert sum(slow) > 1900
    turn = row.tool_call_log
    wall_ms = max(e.started_ms + e.latency_ms for e in turn) - min(e.started_ms for e in turn)
    assert wall_ms < sum(slow), "parallel calls must overlap"
    lines = log.read_text().split()
    assert lines.count("slow-start") == 2 and lines.count("add") == 1
    assert row.tools == [t for t in row.tools if t["type"] == "function"]
    assert {t["function"]["name"] for t in row.tools} >= {"echo", "add", "slow"}
    assert set(row.schema_hashes) == {t["function"]["name"] for t in row.tools}
    assert row.usage.total_tokens > 0 and row.prompt_hash
    assert len(result.tool_calls) == 3
    assert {e.kind for e in result.events} >= {"item", "tool_call", "llm_call"}


def test_react_style_parses_text_calls_and_records_the_prompt_it_showed(
    fake_llm: FakeLlm, tmp_path: Path
) -> None:
    calls = [[("echo", {"text": "hello"}), ("add", {"a": 1, "b": 1})]]
    [row], _, _ = run_tiny(fake_llm, tmp_path, react_script(calls), style="react")
    assert row.style == "react" and row.stop_reason == "final_answer"
    assert row.metadata["final_answer"] == "Here is the answer."
    tool_results = [m["content"] for m in row.messages if m["role"] == "tool"]
    assert tool_results == ["hello", "2"]
    assert "Action Input" in row.messages[0]["content"] and "echo" in row.messages[0]["content"]
    sent = fake_llm.requests[-1]
    assert "tools" not in sent
    assert sent["messages"] == row.metadata["wire_messages"][:-1]


def test_langchain_style_runs_langchains_loop_and_produces_the_same_record(
    fake_llm: FakeLlm, tmp_path: Path
) -> None:
    calls = [[("echo", {"text": "from langchain"}), ("add", {"a": 4, "b": 5})]]
    [row], _log, _ = run_tiny(fake_llm, tmp_path, agent_script(calls), style="langchain")
    assert row.style == "langchain" and row.stop_reason == "final_answer", row.metadata
    roles = [m["role"] for m in row.messages]
    assert roles == ["system", "user", "assistant", "tool", "tool", "assistant"]
    assert sorted(m["content"] for m in row.messages if m["role"] == "tool") == [
        "9",
        "from langchain",
    ]
    call_ids = {c["id"] for c in row.messages[2]["tool_calls"]}
    assert {e.call_id for e in row.tool_call_log} == call_ids
    assert row.turns == 2 and row.tool_calls == 2
    assert fake_llm.requests[0]["tools"][0]["function"]["name"] in {
        "echo",
        "add",
        "slow",
        "big",
        "boom",
        "die",
        "picture",
        "whoami",
    }


async def run_one_call_then_answer(job: AgentJob) -> AgentRun:
    """A style of a few lines: calls the offered `echo` once, then answers with its result."""
    run = AgentRun(messages=[{"role": "user", "content": job.question}], tools=[])
    echo = next(tool for tool in job.toolbox.exposed if tool.tool == "echo")
    text = await job.toolbox.call("c0", echo.name, '{"text": "by registry"}')
    run.final_answer, run.stop_reason, run.turns = text, "final_answer", 1
    return run


def test_a_style_added_by_one_registry_line_runs_and_names_its_rows(
    fake_llm: FakeLlm, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(STYLES, "one-call", AgentStyle(run_one_call_then_answer))
    [row], log, _ = run_tiny(fake_llm, tmp_path, agent_script([]), style="one-call")
    assert (row.style, row.stop_reason, row.metadata["final_answer"]) == (
        "one-call",
        "final_answer",
        "by registry",
    )
    assert row.metadata["tools_channel"] == "api" and row.tool_calls == 1
    calls = [line.split()[1] for line in log.read_text().splitlines()]
    assert calls.count("echo") == 1  # the real server got the call


def test_an_unknown_style_fails_the_plan_with_its_reason_token() -> None:
    with pytest.raises(ConfigError) as raised:
        plan_items([], ["Teacher-A"], ["function-calling", "reAct"])
    assert raised.value.reason == "unknown_agent_style"
    assert check_styles(["react", "react", "langchain"]) == ["react", "langchain"]
