"""Done-when with the embedded model, offline: synthesize 5 tasks, then judge them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli import app
from tests.synthesize.seed import seed_servers
from toucan.records import Task, TaskRating
from toucan.store import Store

# SmolLM2-135M on 2 shared CPU cores: ~40 s per call when the machine is busy, ~15 calls.
pytestmark = [
    pytest.mark.model,
    pytest.mark.slow,
    pytest.mark.timeout(1800),
    pytest.mark.usefixtures("prefect_harness"),
]
EMBEDDED = "SmolLM2-135M-Instruct"  # what the llama server loaded (the GGUF's name)


def run_cli(*args: str) -> dict:
    result = CliRunner().invoke(app, [*args, "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.stderr[-3000:]
    return json.loads(result.stdout)


def test_the_local_model_synthesizes_five_tasks_and_scores_them(tmp_path: Path) -> None:
    pytest.importorskip("llama_cpp")
    store = Store(tmp_path / "local.duckdb")
    seed_servers(store)
    common = ("--store", str(store.path), "--profile", "local")
    synthesized = run_cli("synthesize", "--limit", "5", *common)
    assert synthesized["attempted"] == 5
    tasks = store.select(Task)
    assert len(tasks) == 5
    assert all(t.status in ("ok", "rejected") for t in tasks), [
        (t.reason, t.raw_reply) for t in tasks
    ]
    ok = [t for t in tasks if t.status == "ok"]
    assert ok, [t.reason for t in tasks]
    # whatever the generator deployments are called, the embedded model wrote them
    assert {(t.served_by, t.served_by_embedded) for t in tasks} == {(EMBEDDED, True)}

    rated = run_cli("filter-tasks", *common)
    assert rated["rated"] == len(ok)
    ratings = store.select(TaskRating)
    assert {r.task_id for r in ratings} == {t.task_id for t in ok}
    scored = [r for r in ratings if r.status == "ok"]
    assert scored, [(r.reason, r.raw_reply) for r in ratings]
    assert all(len(r.scores) == 6 for r in scored)
    assert {(r.served_by, r.served_by_embedded) for r in scored} == {(EMBEDDED, True)}
