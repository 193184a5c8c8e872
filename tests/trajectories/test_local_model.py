"""Done-when with the embedded model, offline: `toucan trajectories --limit 3` stores three
trajectories, each ending with a stop reason, whatever the small model's quality."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli import app
from tests.trajectories.helpers import kept_task, seed_store, server_row, tiny_spec
from toucan.records import Trajectory
from toucan.store import Store

pytestmark = [
    pytest.mark.model,
    pytest.mark.usefixtures("prefect_harness"),
    pytest.mark.timeout(1500),
]
STOP_REASONS = {
    "final_answer",
    "empty_answer",
    "max_turns",
    "wall_clock",
    "repeated_tool_call",
    "server_unavailable",
    "model_error",
}


def test_the_local_model_produces_three_trajectories_with_stop_reasons(tmp_path: Path) -> None:
    pytest.importorskip("llama_cpp")
    server = server_row(tiny_spec(tmp_path / "calls.log"))
    questions = [
        "Please echo the word 'toucan' back to me.",
        "What is 17 plus 25?",
        "Add 2 and 3, then echo the result.",
    ]
    store = Store(tmp_path / "local.duckdb")
    seed_store(store, [server], [kept_task(q, [server], [(server, "echo")]) for q in questions])

    result = CliRunner().invoke(
        app,
        [
            "trajectories",
            "--limit",
            "3",
            "--store",
            str(store.path),
            "--profile",
            "local",
            "--json",
        ],
        catch_exceptions=False,
    )

    assert result.exit_code == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout)
    assert summary["planned"] == 3
    rows = store.select(Trajectory)
    assert len(rows) == 3
    assert all(r.stop_reason in STOP_REASONS for r in rows), [r.stop_reason for r in rows]
    assert all(r.turns >= 1 for r in rows), [(r.reason, r.metadata.get("error")) for r in rows]
    # the teacher deployment is a config label; the row names what served it
    assert {(r.served_by, r.served_by_embedded) for r in rows} == {("SmolLM2-135M-Instruct", True)}
