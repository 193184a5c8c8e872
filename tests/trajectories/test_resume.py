"""SIGKILL the trajectories flow mid-run, run it again: nothing duplicated, nothing lost, no
tool call made twice, no server process left behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

from flows.registry import trajectories_flow
from tests.fake_llm import FakeLlm, Rule
from tests.trajectories.helpers import (
    cloud_command,
    kept_task,
    seed_store,
    server_row,
    tiny_spec,
    write_config,
)
from toucan.records import Trajectory
from toucan.store import Store

TASKS = 10


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def echo_calls(log: Path) -> int:
    return log.read_text().split().count("echo") if log.exists() else 0


def servers_alive(log: Path) -> list[psutil.Process]:
    alive = []
    for process in psutil.process_iter(["cmdline"]):
        if str(log) in " ".join(process.info["cmdline"] or []):
            alive.append(process)
    return alive


def slow_answer(request: dict) -> Rule:  # type: ignore[type-arg]
    question = next(m["content"] for m in request["messages"] if m["role"] == "user")
    if not any(m["role"] == "tool" for m in request["messages"]):
        return Rule(tool_calls=[("echo", {"text": f"echo of {question}"})])
    return Rule(text="done", delay=1.0)  # the answer turn is slow: kills land mid-trajectory


def test_a_killed_run_resumes_without_duplicates_or_repeated_tool_calls(
    fake_llm: FakeLlm, tmp_path: Path, prefect_harness: None
) -> None:
    from prefect.settings import PREFECT_API_URL

    log = tmp_path / "calls.log"
    server = server_row(tiny_spec(log))
    seed_store(
        Store(tmp_path / "t.duckdb"),
        [server],
        [kept_task(f"question {n}", [server], [(server, "echo")]) for n in range(TASKS)],
    )
    fake_llm.script([Rule(respond=slow_answer)])
    config = write_config(
        tmp_path / "toucan.yaml", fake_llm.base_url, trajectories={"concurrency": 2}
    )
    store = Store(tmp_path / "t.duckdb")
    toucan = Path(sys.executable).parent / "toucan"
    env = {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value())}
    flow_process = subprocess.Popen(
        [str(toucan), *cloud_command("trajectories", store.path, config)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: echo_calls(log) >= 5, 240, "five tool calls")
    finally:
        flow_process.send_signal(signal.SIGKILL)
        flow_process.wait(timeout=30)
    calls_at_kill = echo_calls(log)
    assert calls_at_kill < TASKS, "the run finished before it could be killed"
    wait_for(lambda: not servers_alive(log), 30, "the orphaned MCP server to exit")

    summary = trajectories_flow(store=str(store.path), config=str(config), profile="cloud")

    rows = store.select(Trajectory)
    assert len(rows) == TASKS and len({r.trajectory_id for r in rows}) == TASKS
    assert all(r.status == "ok" and r.stop_reason == "final_answer" for r in rows)
    kept_from_killed_run = [r for r in rows if r.run_id != summary.run_id]
    assert kept_from_killed_run, "trajectories finished before the kill must be kept"
    assert summary.already_done == len(kept_from_killed_run)
    # a call the server ran but whose result the killed process never journaled runs again:
    # at most the calls in flight at the kill (concurrency 2), never a journaled one
    repeated = echo_calls(log) - TASKS
    assert 0 <= repeated <= 2, "a tool call ran again that was not in flight at the kill"
    assert summary.replayed_tool_calls == calls_at_kill - len(kept_from_killed_run) - repeated
    assert not servers_alive(log)
