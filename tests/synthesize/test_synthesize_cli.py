"""The `toucan synthesize` and `toucan filter-tasks` commands and the Prefect flows behind them,
on a fresh store: the seeded catalog, and a Smithery catalog onboarded with --specs-only."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli import app
from flows.registry import onboard_flow, synthesize_flow
from tests.fake_llm import FakeLlm
from toucan.records import Event, Server, Task, TaskRating, Tool
from toucan.store import Store

SMITHERY_SAMPLE = Path(__file__).resolve().parents[1] / "data" / "smithery_sample.jsonl"

pytestmark = pytest.mark.usefixtures("prefect_harness")


def run_cli(*args: str) -> dict:
    result = CliRunner().invoke(app, [*args, "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.stderr[-3000:]
    return json.loads(result.stdout)


def test_synthesize_then_filter_tasks_from_the_cli_print_json_summaries(
    store: Store, config_path: Path, fake_llm: FakeLlm
) -> None:
    common = ("--store", str(store.path), "--config", str(config_path))
    synthesized = run_cli("synthesize", "--limit", "6", "--seed", "3", *common)
    assert synthesized["by_status"] == {"ok": 6}
    assert sum(synthesized["by_strategy"].values()) == 6
    assert set(synthesized["by_strategy"]) == {"single_server", "multi_server", "featured"}
    assert synthesized["tokens_in"] > 0
    assert store.count(Task, "seed = 3") == 6

    rated = run_cli("filter-tasks", *common)
    assert (rated["rated"], rated["kept"], rated["errors"]) == (6, 6, 0)
    assert rated["thresholds"]["question_quality"] == 3
    assert store.count(TaskRating, "keep") == 6
    assert store.count(Event, "stage = 'filter_tasks' AND kind = 'llm_call'") == 6

    calls = fake_llm.calls.total
    again = run_cli("synthesize", "--limit", "6", "--seed", "3", *common)
    assert (again["already_done"], again["attempted"]) == (6, 0)
    assert run_cli("filter-tasks", *common)["rated"] == 0
    assert fake_llm.calls.total == calls


def test_conflicting_options_are_refused(store: Store, config_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["synthesize", "--limit", "2", "--per-server", "1", "--store", str(store.path)]
    )
    assert result.exit_code == 2
    result = CliRunner().invoke(app, ["synthesize", "--strategy", "nope", "--store", "x"])
    assert result.exit_code == 2


def test_a_smithery_catalog_onboarded_with_specs_only_is_synthesized_over(
    tmp_path: Path, config_path: Path
) -> None:
    store_path = tmp_path / "smithery.duckdb"
    onboard_flow(
        catalogs=[str(SMITHERY_SAMPLE)],
        store=str(store_path),
        specs_only=True,
        config=str(config_path),
    )
    store = Store(store_path)
    assert {s.status for s in store.select(Server)} == {"specs_only"}
    summary = synthesize_flow(store=str(store_path), config=str(config_path), per_server=1)
    assert summary.by_status == {"ok": summary.planned}
    assert set(summary.by_strategy) == {"single_server", "multi_server", "featured"}
    current = {(t.server_id, t.name) for t in store.select(Tool, "current")}
    for task in store.select(Task):
        assert all((t.server_id, t.tool) in current for t in task.target_tools)
