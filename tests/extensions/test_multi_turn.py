"""Extension 3: split and extended conversations on a real MCP server through the fake model
server; turn counts stay honest when a server dies between turns."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from flows.runner import run_stage_async
from tasks.agent.loop import PendingCall, assistant_message
from tests.fake_llm import FakeLlm, Rule
from tests.trajectories.conftest import quiet_litellm_typeddict_warning
from tests.trajectories.helpers import fake_settings, seed_tiny_task
from toucan.ids import make_id
from toucan.records import Event, Trajectory, TrajectoryRating

__all__ = ["quiet_litellm_typeddict_warning"]
SIMULATOR_MARK = "Write the user's next message"
SPLIT_MARK = "sequential user messages"


def logged_calls(log: Path) -> list[tuple[int, str]]:
    """(pid, what) per line the tiny server logged."""
    if not log.exists():
        return []
    fields = [line.split() for line in log.read_text().splitlines()]
    return [(int(f[0]), f[1]) for f in fields if len(f) >= 2]


def newest_server_pid(log: Path) -> int:
    """The pid (ours, not its sandbox's) of the latest tiny server writing to this log."""
    servers = [
        process
        for process in psutil.process_iter(["cmdline", "create_time"])
        if str(log) in (process.info["cmdline"] or [])
        and Path(process.info["cmdline"][0]).name.startswith("python")
    ]
    return max(servers, key=lambda process: process.info["create_time"]).pid


def agent(request: dict[str, Any]) -> Rule:
    """Calls `add` once per user turn (a + 1), then answers with the last tool result."""
    messages = request["messages"]
    if messages[-1]["role"] == "tool":
        return Rule(text=f"The result is {messages[-1]['content']}.")
    users = sum(m["role"] == "user" for m in messages)
    return Rule(tool_calls=[("add", {"a": users, "b": 1})])


def follow_up(request: dict[str, Any]) -> dict[str, Any]:
    history = request["messages"][-1]["content"]
    return {"question": f"Now do it again, follow-up number {history.count('[user]')}."}


def fake_model(request: dict[str, Any]) -> Any:
    prompt = str(request["messages"][-1].get("content"))
    if SIMULATOR_MARK in prompt:
        return follow_up(request)
    if SPLIT_MARK in prompt:
        return {"sub_questions": ["First, echo the word hello.", "Great, now add 2 and 3."]}
    return agent(request)


@pytest.fixture
def fake() -> FakeLlm:
    with FakeLlm(default=fake_model) as server:
        yield server


@pytest.fixture
def seeded(tmp_path: Path):
    """A tiny real server, a kept two-tool task and a kept one-turn trajectory on it."""
    store, server, task = seed_tiny_task(tmp_path)
    base = Trajectory(
        trajectory_id="traj_base",
        task_id=task.task_id,
        teacher="Teacher-A",
        model="openai/x",
        messages=[
            {"role": "system", "content": "You are a helpful assistant with access to tools."},
            {"role": "user", "content": "Add 1 and 1."},
            assistant_message("", [PendingCall(id="c0", name="add", arguments='{"a": 1, "b": 1}')]),
            {"role": "tool", "tool_call_id": "c0", "name": "add", "content": "2"},
            {"role": "assistant", "content": "The result is 2."},
        ],
        tool_call_log=[
            {
                "call_id": "c0",
                "name": "add",
                "server_id": server.server_id,
                "tool": "add",
                "arguments": {"a": 1, "b": 1},
                "is_error": False,
            }
        ],
        tool_calls=1,
        turns=2,
    )
    store.insert(
        [
            base,
            TrajectoryRating(
                rating_id=make_id("jr", "base"), trajectory_id="traj_base", judge="Judge", keep=True
            ),
        ]
    )
    return store, tmp_path / "calls.log"


def test_a_kept_trajectory_is_extended_on_one_live_session(fake, seeded):
    store, log = seeded
    settings = fake_settings(fake.base_url, store.path)
    summary = asyncio.run(
        run_stage_async("multi_turn", settings, store, methods=["extend"], follow_ups=2)
    )
    assert summary.by_status == {"ok": 1}
    (row,) = store.select(Trajectory, "kind = 'multi_turn'")
    assert (row.requested_turns, row.completed_turns, row.parent_id) == (3, 3, "traj_base")
    users = [m["content"] for m in row.messages if m["role"] == "user"]
    assert users[0] == "Add 1 and 1." and len(users) == 3
    assert row.messages[-1]["content"] == "The result is 4."  # 3 + 1 on the third turn
    pids = {pid for pid, what in logged_calls(log) if what == "add"}
    assert len(pids) == 1  # prefix replay and both follow-ups on the same server process
    assert [w for _, w in logged_calls(log)].count("add") == 3
    assert row.metadata["multi_turn_generation"]["replay_failures"] == 0
    assert len(row.tool_call_log) == 3  # the base's call, then one per follow-up
    # the events ledger counts the calls this conversation made, not the base's again
    assert store.count(Event, "stage = 'multi_turn' AND kind = 'tool_call'") == 2
    calls = fake.calls.total
    again = asyncio.run(
        run_stage_async("multi_turn", settings, store, methods=["extend"], follow_ups=2)
    )
    assert again.already_done == 1 and fake.calls.total == calls


def test_a_multi_tool_task_is_split_into_turns_of_one_conversation(fake, seeded):
    store, log = seeded

    def split_agent(request: dict[str, Any]) -> Any:
        messages = request["messages"]
        if not request.get("tools"):
            return fake_model(request)
        if messages[-1]["role"] == "tool":
            return Rule(text=f"Done: {messages[-1]['content']}.")
        if "echo" in messages[-1]["content"]:
            return Rule(tool_calls=[("echo", {"text": "hello"})])
        return Rule(tool_calls=[("add", {"a": 2, "b": 3})])

    fake.script([Rule(respond=split_agent)])
    settings = fake_settings(fake.base_url, store.path)
    asyncio.run(run_stage_async("multi_turn", settings, store, methods=["split"]))
    (row,) = store.select(Trajectory, "kind = 'multi_turn'")
    assert row.status == "ok" and (row.requested_turns, row.completed_turns) == (2, 2)
    assert [m["content"] for m in row.messages if m["role"] == "user"] == [
        "First, echo the word hello.",
        "Great, now add 2 and 3.",
    ]
    assert row.messages[0]["role"] == "system" and row.tool_calls == 2
    assert row.messages[-1]["content"] == "Done: 5."
    assert len({pid for pid, _ in logged_calls(log)}) == 1


def test_a_server_that_died_between_turns_ends_the_conversation_honestly(fake, seeded):
    store, log = seeded

    def kill_then_ask(request: dict[str, Any]) -> Any:
        if SIMULATOR_MARK not in str(request["messages"][-1].get("content")):
            return fake_model(request)
        pid = newest_server_pid(log)  # the server that ran the replayed prefix
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                    break
            except psutil.NoSuchProcess:
                break
        return follow_up(request)

    fake.script([Rule(respond=kill_then_ask)])
    settings = fake_settings(fake.base_url, store.path)
    summary = asyncio.run(
        run_stage_async("multi_turn", settings, store, methods=["extend"], follow_ups=2)
    )
    (row,) = store.select(Trajectory, "kind = 'multi_turn'")
    assert (row.requested_turns, row.completed_turns) == (
        3,
        1,
    )  # the failed follow-up is not a turn
    assert (row.status, row.reason) == ("error", "server_died_between_turns")
    assert sum(m["role"] == "user" for m in row.messages) == 1  # nothing of the failed turn kept
    assert summary.by_reason == {"server_died_between_turns": 1}
    assert json.dumps(row.metadata["multi_turn_generation"]["failed_turn_reason"]) == (
        '"server_died_between_turns"'
    )
