"""Bad input: each case ends with a clear stop reason or goes on as a user would expect,
never crashes the batch, and leaves no process behind."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from tasks.agent import AgentBudget
from tests.fake_llm import FakeLlm, Rule
from tests.trajectories.helpers import agent_script
from tests.trajectories.test_agent_runner import run_tiny


def echo_forever(request: dict[str, Any]) -> Rule:
    turn = sum(1 for m in request["messages"] if m.get("role") == "assistant")
    return Rule(tool_calls=[("echo", {"text": f"again {turn}"})])


def scripted(question: str, rule: Rule) -> Rule:
    rule.contains = question
    return rule


TEST_STARTED: dict[str, float] = {}


@pytest.fixture(autouse=True)
def note_test_start() -> None:
    TEST_STARTED["at"] = time.time() - 1.0


def child_processes() -> list[psutil.Process]:
    """Children this test started (the shared Prefect harness and others predate it)."""
    since = TEST_STARTED.get("at", 0.0)
    return [
        p
        for p in psutil.Process().children(recursive=True)
        if p.is_running() and p.create_time() >= since
    ]


def test_bad_tool_calls_and_bad_models_end_with_clear_stop_reasons(
    fake_llm: FakeLlm, tmp_path: Path
) -> None:
    rules = [
        scripted("schema", agent_script([[("add", {"a": "not a number", "b": 2})]])),
        scripted("unknown", agent_script([[("no_such_tool", {"x": 1})]])),
        scripted(
            "badjson",
            Rule(
                respond=lambda r: (
                    Rule(text="gave up")
                    if len(r["messages"]) > 2
                    else Rule(tool_calls=[("echo", "not-an-object")])
                )
            ),
        ),  # type: ignore[list-item]
        scripted("big", agent_script([[("big", {})]])),
        scripted("hang", agent_script([[("slow", {"seconds": 60})]])),
        scripted("loop", agent_script([[("echo", {"text": "same"})]] * 10)),
        scripted("never", Rule(respond=echo_forever)),
        scripted("silent", Rule(delay=8.0, text="too late")),
    ]
    questions = ["schema", "unknown", "badjson", "big", "hang", "loop", "never", "silent"]
    rows, _log, _ = run_tiny(
        fake_llm,
        tmp_path,
        rules,
        questions=questions,
        call_timeout=1.5,
        budget=AgentBudget(max_turns=4, wall_clock_s=5.0),
        per_server=8,
    )
    by = dict(zip(questions, rows, strict=True))

    schema = by["schema"]
    assert schema.stop_reason == "final_answer" and schema.tool_errors == 1
    assert schema.tool_call_log[0].schema_violation  # labelled, and the server said why
    assert schema.messages[3]["role"] == "tool" and schema.messages[3]["content"]

    unknown = by["unknown"]
    assert unknown.tool_call_log[0].error_reason == "unknown_tool"
    assert "no_such_tool" in unknown.messages[3]["content"]
    assert unknown.stop_reason == "final_answer"

    assert by["badjson"].tool_call_log[0].error_reason == "bad_arguments"

    big = by["big"]
    entry = big.tool_call_log[0]
    assert entry.truncated and entry.original_chars == 5 * 1024 * 1024
    assert "truncated by toucan" in big.messages[3]["content"]
    assert len(big.messages[3]["content"]) < 3000

    hang = by["hang"]
    assert hang.tool_call_log[0].error_reason == "tool_timeout"
    assert hang.stop_reason == "final_answer"

    assert by["loop"].stop_reason == "repeated_tool_call" and by["loop"].turns == 3
    assert by["never"].stop_reason == "max_turns" and by["never"].turns == 4
    assert by["silent"].stop_reason == "wall_clock"
    assert all(row.status == "ok" for row in rows)
    assert child_processes() == []


def test_a_server_that_dies_mid_trajectory_is_restarted_and_the_agent_goes_on(
    fake_llm: FakeLlm, tmp_path: Path
) -> None:
    script = agent_script([[("die", {})], [("echo", {"text": "after the crash"})]])
    [row], log, result = run_tiny(fake_llm, tmp_path, script)
    assert row.stop_reason == "final_answer" and row.status == "ok"
    assert row.tool_call_log[0].error_reason == "server_crashed"
    assert row.tool_call_log[1].is_error is False
    assert row.messages[5]["content"] == "after the crash"
    assert log.read_text().count("start good") == 2  # the pool started a fresh session
    assert result.paused == {}
    assert child_processes() == []
