"""The extension commands through the CLI and their Prefect flows, on a real store."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from flows.irrelevance import count_pending
from tests.export.seeding import seed_pipeline
from toucan.cli import app
from toucan.records import Task
from toucan.store import Store


def test_the_irrelevance_command_runs_its_flow_and_reports_json(prefect_harness, tmp_path):
    store = Store(tmp_path / "toucan.duckdb")
    seed_pipeline(store)  # two kept original tasks on the weather server, a notes server
    assert count_pending(store) == 2
    args = ["irrelevance", "--store", str(store.path), "--profile", "local", "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["kept_tasks"], summary["created"]) == (2, 2)
    assert count_pending(store) == 0
    assert {t.server_ids[0] for t in store.select(Task, "run_id = ?", [summary["run_id"]])} == {
        "srv_notes"
    }


def test_an_unknown_multi_turn_method_is_refused(tmp_path):
    result = CliRunner().invoke(
        app, ["multi-turn", "--method", "telepathy", "--store", str(tmp_path / "s.duckdb")]
    )
    assert result.exit_code == 2
    assert "telepathy" in result.output
