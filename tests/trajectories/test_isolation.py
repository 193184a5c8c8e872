"""One episode = one session: a stateful fleet server (the knowledge-graph memory) is isolated
per trajectory, and shared across a batch only when its spec says `shared`."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import anyio
import psutil
import pytest

from mcp_env.catalog import load_catalog, parse_catalog_entries
from mcp_env.fleet.catalog import CATALOG_PATH, load_fleet_catalog
from mcp_env.pool import SessionPool
from mcp_env.specs import StdioSpec, parse_server_spec
from tasks.agent import AgentBudget
from tasks.onboard import spec_summary
from tasks.trajectories import (
    BatchResult,
    plan_items,
)
from tests.fake_llm import FakeLlm
from tests.trajectories.helpers import (
    dispatch_script,
    fake_settings,
    fleet_dir,
    kept_task,
    run_server_batch,
    server_row,
    tiny_spec,
)
from toucan.records import Trajectory

ENTITY = {"name": "Zephyrine", "entityType": "person", "observations": ["likes kites"]}
WRITE = ("create_entities", {"entities": [ENTITY]})
READ = ("read_graph", {})
STARTED: dict[str, float] = {}


@pytest.fixture(autouse=True)
def note_test_start() -> None:
    STARTED["at"] = time.time() - 1.0


def memory_spec(isolation: str) -> StdioSpec:
    # `python3 dev.py test` installs the fleet first; without it this is a set-up error
    assert (fleet_dir() / "npm" / "memory").is_dir(), "run `toucan fleet install` first"
    raw = next(s for s in load_fleet_catalog(fleet_dir()) if s["name"] == "memory")
    spec = parse_server_spec({**raw, "isolation": isolation})
    assert isinstance(spec, StdioSpec)
    return spec


def run_batch(
    fake_llm: FakeLlm,
    tmp_path: Path,
    isolation: str,
    plans: dict[str, list[list[tuple[str, dict[str, Any]]]]],
    *,
    replay: dict[str, dict[str, Any]] | None = None,
    concurrency: int = 1,
) -> tuple[dict[str, Trajectory], BatchResult]:
    """One batch, one trajectory per plan; with concurrency 1 they run in the plans' order."""
    spec = memory_spec(isolation)
    server = server_row(spec)
    assert server.spec["isolation"] == isolation  # the stored spec carries the flag
    fake_llm.script([dispatch_script(plans, answer="done")])
    settings = fake_settings(
        fake_llm.base_url, tmp_path / "t.duckdb", mcp={"sandbox_root": str(tmp_path / "sbx")}
    )
    targets = [(server, WRITE[0]), (server, READ[0])]
    items = [
        plan_items([kept_task(f"{marker}: use the memory", [server], targets)[0]],
                   ["Teacher-A"], ["function-calling"])[0]
        for marker in plans
    ]  # fmt: skip
    result = run_server_batch(
        server,
        items,
        settings,
        batch_id="iso",
        replay=replay,
        budget=AgentBudget(max_turns=4, wall_clock_s=30),
        token_budget=2000,
        concurrency=concurrency,
        run_id="run_iso",
    )
    rows = {row.metadata["question"].split(":")[0]: row for row in result.trajectories}
    assert all(row.status == "ok" for row in rows.values()), [r.reason for r in rows.values()]
    return rows, result


def tool_texts(row: Trajectory) -> list[str]:
    return [str(m["content"]) for m in row.messages if m["role"] == "tool"]


def leftover_processes() -> list[psutil.Process]:
    return [
        p
        for p in psutil.Process().children(recursive=True)
        if p.is_running() and p.create_time() >= STARTED["at"]
        and p.status() != psutil.STATUS_ZOMBIE
    ]  # fmt: skip


def test_a_per_trajectory_server_does_not_show_one_trajectorys_writes_to_the_next(
    fake_llm: FakeLlm, tmp_path: Path
) -> None:
    rows, _ = run_batch(
        fake_llm, tmp_path, "per_trajectory", {"writer": [[WRITE]], "reader": [[READ]]}
    )
    assert "Zephyrine" in tool_texts(rows["writer"])[0]
    memory_id = rows["reader"].tool_call_log[0].server_id
    assert rows["reader"].metadata["isolated_servers"] == [memory_id]
    [graph] = tool_texts(rows["reader"])
    assert "entities" in graph and "Zephyrine" not in graph
    assert leftover_processes() == []
    assert list((tmp_path / "sbx").iterdir()) == []  # every sandbox removed


def test_concurrent_trajectories_each_see_only_their_own_writes(
    fake_llm: FakeLlm, tmp_path: Path
) -> None:
    names = ["alpha", "beta", "gamma", "delta"]
    plans = {
        name: [[("create_entities", {"entities": [{**ENTITY, "name": f"Ent-{name}"}]})], [READ]]
        for name in names
    }
    rows, _ = run_batch(fake_llm, tmp_path, "per_trajectory", plans, concurrency=4)
    for name in names:
        graph = tool_texts(rows[name])[1]
        assert [other for other in names if f"Ent-{other}" in graph] == [name]
    assert leftover_processes() == []
    assert list((tmp_path / "sbx").iterdir()) == []


def test_a_pool_lists_a_server_once_then_stops_it_and_keeps_the_list(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with SessionPool() as pool:
            server_id = pool.register(tiny_spec(tmp_path / "calls.log"))
            first = await pool.list_tools_then_stop(server_id)
            with anyio.fail_after(10):
                while pool.server_pid(server_id) is not None:
                    await anyio.sleep(0.02)
            assert await pool.list_tools_then_stop(server_id) == first
            assert pool.server_pid(server_id) is None  # the cached list started nothing
            assert {tool.name for tool in first} >= {"echo", "add"}

    asyncio.run(scenario())
    assert leftover_processes() == []


def test_a_shared_server_lets_the_next_trajectory_see_the_writes(
    fake_llm: FakeLlm, tmp_path: Path
) -> None:
    rows, _ = run_batch(fake_llm, tmp_path, "shared", {"writer": [[WRITE]], "reader": [[READ]]})
    [graph] = tool_texts(rows["reader"])
    assert "isolated_servers" not in rows["reader"].metadata
    assert "Zephyrine" in graph
    assert leftover_processes() == []


def test_a_resumed_trajectory_rebuilds_its_servers_state_from_the_replayed_calls(
    fake_llm: FakeLlm, tmp_path: Path
) -> None:
    plans = {"both": [[WRITE], [READ]]}
    first, result = run_batch(fake_llm, tmp_path, "per_trajectory", plans)
    assert "Zephyrine" in tool_texts(first["both"])[1]
    # a crash after the write: only the write was journaled
    [write_call] = [c for c in result.tool_calls if c.tool == WRITE[0]]
    replay = {write_call.call_key: write_call.result}
    resumed, _ = run_batch(fake_llm, tmp_path, "per_trajectory", plans, replay=replay)
    log = resumed["both"].tool_call_log
    assert [entry.replayed for entry in log] == [True, False]
    assert "Zephyrine" in tool_texts(resumed["both"])[1]  # the fresh server got the write again
    assert leftover_processes() == []


def test_onboarding_stores_the_fleets_isolation_and_smithery_specs_stay_shared() -> None:
    specs, rejections = parse_catalog_entries(
        load_fleet_catalog(fleet_dir()), source=str(CATALOG_PATH)
    )
    assert rejections == []
    stored = {spec.name: spec_summary(spec)["isolation"] for spec in specs}
    shared = {name for name, isolation in stored.items() if isolation == "shared"}
    assert shared == {"mcp-server-time", "time-mcp", "calculator", "math", "markitdown"}
    assert set(stored.values()) == {"shared", "per_trajectory"}
    smithery = Path(__file__).resolve().parents[2] / "catalogs" / "smithery" / "servers.jsonl"
    loaded = load_catalog(smithery)
    assert loaded.specs and {spec.isolation for spec in loaded.specs} == {"shared"}
