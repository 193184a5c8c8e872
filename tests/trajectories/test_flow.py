"""The `trajectories` flow on a real DuckDB file, real fleet servers and the fake model."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from flows.registry import trajectories_flow
from mcp_env.fleet.catalog import load_fleet_catalog
from mcp_env.pool import SessionPool
from mcp_env.specs import parse_server_spec
from tests.fake_llm import FakeLlm
from tests.trajectories.helpers import (
    dispatch_script,
    fleet_dir,
    kept_task,
    seed_store,
    server_row,
    tiny_spec,
    write_config,
)
from toucan.records import ToolCallRecord, Trajectory
from toucan.store import Store

FLEET_CALLS: dict[str, tuple[str, dict[str, Any]]] = {
    "mcp-server-time": (
        "convert_time",
        {"source_timezone": "UTC", "time": "12:00", "target_timezone": "Asia/Tokyo"},
    ),
    "calculator": ("calculate", {"expression": "6*7"}),
    "math": ("sum", {"numbers": [1, 2, 3.5]}),
    "sqlite": ("list_tables", {}),
    "time-mcp": ("days_in_month", {"date": "2024-02-01"}),
}
STYLES = ["function-calling", "react", "langchain"]

pytestmark = pytest.mark.skipif(
    not (fleet_dir() / "venvs").exists(), reason="the fleet is not installed (toucan fleet install)"
)


def fleet_specs() -> dict[str, Any]:
    return {
        s["name"]: parse_server_spec(s)
        for s in load_fleet_catalog(fleet_dir())
        if s["name"] in FLEET_CALLS
    }


async def direct_results(specs: dict[str, Any]) -> dict[str, str]:
    """What each server itself answers to the scripted call, on a session of our own."""
    fleet = fleet_dir().resolve()
    answers = {}
    async with SessionPool(fleet_dir=fleet, seed_dir=fleet / "seed") as pool:
        for name, spec in specs.items():
            tool, arguments = FLEET_CALLS[name]
            answers[name] = (await pool.call_tool(pool.register(spec), tool, arguments)).text
    return answers


def test_trajectories_over_five_fleet_servers_hold_real_results_in_all_styles(
    fake_llm: FakeLlm, tmp_path: Path, prefect_harness: None
) -> None:
    specs = fleet_specs()
    rows = {name: server_row(spec) for name, spec in specs.items()}
    tasks = [
        kept_task(f"[{name}] please help", [rows[name]], [(rows[name], FLEET_CALLS[name][0])])
        for name in specs
    ]
    pair = [rows["calculator"], rows["math"]]
    tasks.append(kept_task("[pair] compute both", pair, [(pair[0], "calculate"), (pair[1], "sum")]))
    script = {f"[{name}]": [[FLEET_CALLS[name]]] for name in specs}
    script["[pair]"] = [
        [
            ("calculator__calculate", FLEET_CALLS["calculator"][1]),
            ("math__sum", FLEET_CALLS["math"][1]),
        ]
    ]
    fake_llm.script([dispatch_script(script)])
    store = Store(tmp_path / "t.duckdb")
    seed_store(store, list(rows.values()), tasks)
    config = write_config(
        tmp_path / "toucan.yaml",
        fake_llm.base_url,
        trajectories={"concurrency": 8, "styles": STYLES},
    )

    summary = trajectories_flow(store=str(store.path), config=str(config), profile="cloud")

    assert summary.total.done == 6 * 3 and summary.total.failed == 0, summary.stop_reasons
    trajectories = store.select(Trajectory)
    assert len(trajectories) == 18 and {t.style for t in trajectories} == set(STYLES)
    expected = asyncio.run(direct_results(specs))
    servers_seen = set()
    for row in trajectories:
        assert row.stop_reason == "final_answer"
        for entry, message in zip(row.tool_call_log, tool_messages_by_call(row), strict=True):
            assert entry.is_error is False
            assert message == expected[entry.server], (row.style, entry.server)
            servers_seen.add(entry.server)
    assert len(servers_seen) >= 5
    pair_row = next(t for t in trajectories if "[pair]" in t.metadata["question"])
    assert pair_row.tool_name_map["math__sum"]["tool"] == "sum"
    assert store.count(ToolCallRecord) == sum(t.tool_calls for t in trajectories)
    assert set(summary.per_server) == set(specs)

    calls_before = fake_llm.calls.total
    again = trajectories_flow(store=str(store.path), config=str(config), profile="cloud")
    assert again.planned == 0 and again.already_done == 18
    assert store.count(Trajectory) == 18 and fake_llm.calls.total == calls_before


def tool_messages_by_call(row: Trajectory) -> list[str]:
    """Tool message contents in the order of the call log (matched by call id)."""
    by_id = {m["tool_call_id"]: m["content"] for m in row.messages if m["role"] == "tool"}
    return [by_id[entry.call_id] for entry in row.tool_call_log]


def test_a_dead_server_fails_only_its_items_and_is_paused_with_its_reason(
    fake_llm: FakeLlm, tmp_path: Path, prefect_harness: None
) -> None:
    good = server_row(tiny_spec(tmp_path / "good.log", name="tiny-good"))
    dead = server_row(tiny_spec(tmp_path / "dead.log", name="tiny-dead", mode="crash"))
    tasks = [kept_task(f"[good] q{n}", [good], [(good, "echo")]) for n in range(3)]
    tasks += [kept_task(f"[dead] q{n}", [dead], [(dead, "echo")]) for n in range(4)]
    fake_llm.script(
        [
            dispatch_script(
                {"[good]": [[("echo", {"text": "hi"})]], "[dead]": [[("echo", {"text": "hi"})]]}
            )
        ]
    )
    store = Store(tmp_path / "t.duckdb")
    seed_store(store, [good, dead], tasks)
    config = write_config(
        tmp_path / "toucan.yaml",
        fake_llm.base_url,
        trajectories={"concurrency": 1},
        mcp={"circuit_breaker_failures": 2},
    )

    summary = trajectories_flow(store=str(store.path), config=str(config), profile="cloud")

    assert summary.total.done == 3 and summary.total.failed == 4
    assert summary.paused_servers["tiny-dead"]["reason"] == "crashed_at_start"
    failed = store.select(Trajectory, "status = 'error'")
    assert sorted(t.reason for t in failed) == [
        "crashed_at_start",
        "crashed_at_start",
        "server_paused",
        "server_paused",
    ]
    assert all("[dead]" in t.metadata["question"] for t in failed)
