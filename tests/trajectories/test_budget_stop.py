"""A budget cap reached in the middle of `trajectories`: the agent routers of every batch share
the run's one budget, no batch starts once it is spent, and the rerun with a higher cap
finishes the rest with exactly the model calls of a clean run (issue 13, bad input 3).

Two tiny real MCP servers, real DuckDB files, the fake model server over real HTTP.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from flows.runner import run_stage_async
from tests.fake_llm import FakeLlm, Rule
from tests.trajectories.helpers import deployment, kept_task, seed_store, server_row, tiny_spec
from toucan.config import Settings, load_settings
from toucan.errors import BudgetExhausted
from toucan.records import Run, Trajectory
from toucan.store import Store

PRICED = {"input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6, "params": {"max_tokens": 50}}
# three batches of 8 (two of server A, one of B); concurrency 2 runs two batches at once, one
# item in flight each, and the third waits for a free slot
TASKS = {"tiny-a": 16, "tiny-b": 8}
BATCH = 8
ITEMS = sum(TASKS.values())


def settings_for(base_url: str, store: Path, **sections: Any) -> Settings:
    """Every deployment priced (a cap refuses unpriced ones) and on the fake server."""
    models = {
        "generators": [deployment("Gen", base_url, **PRICED)],
        "teachers": [deployment("Teacher-A", base_url, **PRICED)],
        "judge": [deployment("Judge", base_url, **PRICED)],
        "fallbacks": {},
        "route_to_local": False,
    }
    trajectories = {"concurrency": 2, "styles": ["function-calling"]}
    overrides = {"models": models, "store": str(store), "trajectories": trajectories, **sections}
    return load_settings(None, profile="cloud", overrides=overrides)


def echo_then_answer(request: dict[str, Any]) -> Rule:
    """Turn one calls the echo tool, turn two answers: two model calls per trajectory."""
    if any(m["role"] == "tool" for m in request["messages"]):
        return Rule(text="The echo came back.")
    echo = next(t["function"]["name"] for t in request["tools"] if "echo" in t["function"]["name"])
    return Rule(tool_calls=[(echo, {"text": "hello"})])


def seeded_store(path: Path, tmp_path: Path, tasks: dict[str, int] = TASKS) -> Store:
    """A store with the two servers and `tasks` kept tasks on each, all calling echo."""
    store = Store(path)
    servers = {name: server_row(tiny_spec(tmp_path / f"{name}.log", name)) for name in TASKS}
    kept = [
        kept_task(f"[{name}] question {n}", [servers[name]], [(servers[name], "echo")])
        for name, count in tasks.items()
        for n in range(count)
    ]
    seed_store(store, list(servers.values()), kept)
    return store


def trajectories(settings: Settings, store: Store) -> Any:
    return asyncio.run(run_stage_async("trajectories", settings, store))


def test_a_cap_reached_mid_run_stops_every_batch_and_the_rerun_finishes_paying_nothing_twice(
    fake_llm: FakeLlm, tmp_path: Path
) -> None:
    fake_llm.script([Rule(respond=echo_then_answer)])
    probe_store = seeded_store(tmp_path / "probe.duckdb", tmp_path, {"tiny-a": 1})
    probe = trajectories(settings_for(fake_llm.base_url, probe_store.path), probe_store)
    assert probe.total.done == 1 and fake_llm.calls.total == 2
    assert probe.spent_usd > 0 and probe.spent_usd == pytest.approx(probe.total.cost_usd)
    clean_calls, clean_usd = 2 * ITEMS, ITEMS * probe.spent_usd  # every trajectory alike
    fake_llm.reset()
    # A reservation holds the prompt with its tool schemas, which the fake does not bill:
    # ~$0.0009 against ~$0.0002 paid, so a call starts only while that much is left: the run
    # stops between 4.5 and 7 trajectories in, before either running batch of 8 can finish.
    # On budgets of their own, the two batches would each spend that much: about twice it.
    cap = 7.2 * probe.spent_usd
    store = seeded_store(tmp_path / "capped.duckdb", tmp_path)
    capped = settings_for(fake_llm.base_url, store.path, budget={"usd": cap})

    with pytest.raises(BudgetExhausted) as stopped:
        trajectories(capped, store)

    assert "raise budget.usd" in str(stopped.value)
    run = max(store.select(Run), key=lambda r: r.started_at)
    first = run.summary
    assert run.status == "failed" and first["stopped"] == "budget_exhausted"
    assert first["spent_usd"] <= cap and first["not_started"] == BATCH
    rows = store.select(Trajectory)
    done = [row for row in rows if row.status == "ok"]
    assert 1 <= len(done) < ITEMS and len(rows) == ITEMS - BATCH  # nothing half-written: the
    assert {r.reason for r in rows if r.status != "ok"} == {"budget_exhausted"}  # rest is errors
    assert first["spent_usd"] == pytest.approx(sum(r.cost_usd for r in rows))

    rerun = trajectories(
        settings_for(fake_llm.base_url, store.path, budget={"usd": 10 * cap}), store
    )

    assert rerun.stopped is None and rerun.total.done == ITEMS - len(done)
    assert store.count(Trajectory, "status = 'ok'") == ITEMS == store.count(Trajectory)
    assert fake_llm.calls.total == clean_calls  # over both runs: a paid reply is never re-paid
    # the questions differ by a digit or two: a token more or less per call
    assert first["spent_usd"] + rerun.spent_usd == pytest.approx(clean_usd, rel=0.02)
    print(f"cap ${cap:.6f}: stopped at ${first['spent_usd']:.6f}, {len(done)} of {ITEMS} done")
