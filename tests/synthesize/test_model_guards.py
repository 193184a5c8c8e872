"""A stage run's model guards (flows/spend.py): an outage stops the run fast, a budget cap stops
it cleanly, and a rerun finishes the rest paying nothing twice.

Real DuckDB files, the fake model server over real HTTP; the outage runs the Prefect flow on
its thread pool (issue 15, fault 5), the budget runs on the plain asyncio executor (issue 13).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from cli import app
from flows.registry import synthesize_flow
from flows.runner import run_stage_async
from tests.fake_llm import FakeLlm, Rule
from tests.synthesize.seed import fake_settings, seed_servers, write_config
from toucan.errors import BudgetExhausted, ConfigError, ModelGroupDown
from toucan.records import Event, Run, Task
from toucan.store import Store

PRICES = {"input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6}
# the competent generator's reply is ~90 tokens: a reservation stays close to a call's cost
MAX_TOKENS = 150
OUTAGE_ITEMS, ATTEMPTS, BREAKER = 30, 5, 3
OUTAGE_DEADLINE_S = 60  # generous for a loaded box; measured 3-5 s (it was 107 s unguarded)


def guarded_config(path: Path, base_url: str, budget: float | None = None, **models: Any) -> Path:
    """The stage 2 test config with every deployment priced, retrying `ATTEMPTS - 1` times and
    replying in at most MAX_TOKENS, capped at `budget` dollars; `models` sets fields of the
    models section."""
    write_config(path, base_url, **({"budget": {"usd": budget}} if budget is not None else {}))
    config = yaml.safe_load(path.read_text())
    for group in ("generators", "teachers", "judge"):
        for deployment in config["models"][group]:
            deployment.update(PRICES, max_retries=ATTEMPTS - 1)
            deployment.setdefault("params", {})["max_tokens"] = MAX_TOKENS
    config["models"].update(models)
    path.write_text(yaml.safe_dump(config))
    return path


def synthesize(config: Path, store: Store, limit: int, **overrides: Any) -> Any:
    settings = fake_settings(config, **overrides)
    return asyncio.run(run_stage_async("synthesize", settings, store, limit=limit, seed=0))


def last_run(store: Store) -> Run:
    return max(store.select(Run), key=lambda run: run.started_at)


def fresh_store(path: Path) -> Store:
    store = Store(path)
    seed_servers(store)
    return store


def test_an_outage_stops_the_stage_fast_and_a_rerun_after_it_finishes_every_row(
    fake_llm: FakeLlm, tmp_path: Path, prefect_harness: None
) -> None:
    store = fresh_store(tmp_path / "outage.duckdb")
    config = guarded_config(
        tmp_path / "toucan.yaml", fake_llm.base_url, circuit_breaker_failures=BREAKER
    )
    fake_llm.script([Rule(status=503)])
    params = {"store": str(store.path), "config": str(config), "profile": "cloud"}

    started = time.monotonic()
    state = synthesize_flow(**params, limit=OUTAGE_ITEMS, seed=0, return_state=True)
    elapsed = time.monotonic() - started

    assert state.is_failed()
    error = state.result(raise_on_failure=False)
    assert isinstance(error, ModelGroupDown) and "run the stage again" in str(error)
    assert elapsed < OUTAGE_DEADLINE_S, elapsed
    # 5 deployments, each paused after BREAKER failures in a row: at most BREAKER - 1 requests
    # more than its items' first attempts; unguarded, every item made all its attempts
    requests = fake_llm.calls.total
    assert requests <= OUTAGE_ITEMS + 5 * (BREAKER - 1) < OUTAGE_ITEMS * ATTEMPTS / 3
    rows = store.select(Task)
    assert len(rows) == OUTAGE_ITEMS and {t.status for t in rows} == {"error"}
    reasons = {t.reason for t in rows}
    assert "model_unavailable" in reasons <= {"model_unavailable", "model_server_error"}
    run = last_run(store)
    assert run.status == "failed" and run.summary["stopped"] == "model_unavailable"
    assert run.summary["spent_usd"] == 0

    fake_llm.script([])  # the provider is back: competent replies
    fake_llm.reset()
    summary = synthesize_flow(**params, limit=OUTAGE_ITEMS, seed=0)

    assert summary.by_status == {"ok": OUTAGE_ITEMS} and summary.stopped is None
    assert fake_llm.calls.total == OUTAGE_ITEMS
    assert store.count(Task) == OUTAGE_ITEMS == store.count(Task, "status = 'ok'")
    print(f"outage: stopped in {elapsed:.1f} s after {requests} requests")


def test_a_cap_at_half_the_cost_stops_near_it_and_a_rerun_with_more_finishes_paying_nothing_twice(
    fake_llm: FakeLlm, tmp_path: Path
) -> None:
    config = guarded_config(tmp_path / "toucan.yaml", fake_llm.base_url)
    clean = synthesize(config, fresh_store(tmp_path / "clean.duckdb"), 12)
    clean_calls = fake_llm.calls.total
    assert clean.by_status == {"ok": 12} and clean_calls == 12
    assert clean.spent_usd == pytest.approx(clean.cost_usd) and clean.spent_usd > 0
    assert sum(clean.spent_by_model.values()) == pytest.approx(clean.spent_usd)
    fake_llm.reset()
    fake_llm.latency = 0.05  # several calls in flight when the cap is reached
    cap = clean.spent_usd / 2
    store = fresh_store(tmp_path / "capped.duckdb")

    with pytest.raises(BudgetExhausted) as stopped:
        synthesize(config, store, 12, budget={"usd": cap})

    assert "raise budget.usd" in str(stopped.value)
    run = last_run(store)
    first = run.summary
    assert run.status == "failed" and first["stopped"] == "budget_exhausted"
    done = store.count(Task, "status = 'ok'")
    paid = fake_llm.calls.total
    assert 3 <= done <= 9 and paid == done  # a refused call is never sent
    # the run spent no more than the cap, and stopped within one call's cost of it
    assert first["spent_usd"] <= cap and cap - first["spent_usd"] < 2 * clean.spent_usd / 12
    left = store.select(Task, "status = 'error'")
    assert len(left) == 12 - done and {t.reason for t in left} == {"budget_exhausted"}

    rerun = synthesize(config, store, 12, budget={"usd": 10 * cap})

    assert rerun.stopped is None and store.count(Task, "status = 'ok'") == 12
    assert fake_llm.calls.total == clean_calls  # over both runs: exactly a clean run's calls
    assert first["spent_usd"] + rerun.spent_usd == pytest.approx(clean.spent_usd)
    print(f"cap ${cap:.6f}: stopped at ${first['spent_usd']:.6f}, {done} of 12 done")


def test_a_cap_with_an_unpriced_deployment_refuses_to_start_unless_allowed(
    fake_llm: FakeLlm, tmp_path: Path
) -> None:
    config = tmp_path / "toucan.yaml"
    write_config(config, fake_llm.base_url)  # the fake's model names have no price
    store = fresh_store(tmp_path / "unpriced.duckdb")

    with pytest.raises(ConfigError) as refused:
        synthesize(config, store, 3, budget={"usd": 1.0})

    assert refused.value.reason == "unpriced_deployment"
    assert store.count(Run) == 0 and fake_llm.calls.total == 0
    allowed = synthesize(config, store, 3, budget={"usd": 1.0, "allow_unpriced": True})
    assert allowed.by_status == {"ok": 3} and allowed.spent_usd == 0
    assert store.count(Event, "kind = 'llm_call' AND status = 'ok'") == 3


def test_the_cli_says_in_one_line_how_to_continue_and_prints_the_spend_of_a_run(
    fake_llm: FakeLlm, tmp_path: Path, prefect_harness: None
) -> None:
    store = fresh_store(tmp_path / "cli.duckdb")
    runner = CliRunner()

    def run(budget: float) -> Any:
        config = guarded_config(tmp_path / f"toucan-{budget}.yaml", fake_llm.base_url, budget)
        common = ["--store", str(store.path), "--config", str(config), "--profile", "cloud"]
        return runner.invoke(app, ["synthesize", "--limit", "3", "--seed", "0", *common])

    stopped = run(1e-9)  # not even one call fits
    assert stopped.exit_code == 2 and fake_llm.calls.total == 0
    assert "raise budget.usd and run the stage again" in stopped.output
    finished = run(1.0)
    assert finished.exit_code == 0, finished.output
    assert "model spend $0.00" in finished.output and fake_llm.calls.total == 3
