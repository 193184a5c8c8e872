"""`toucan status --json` tells the truth while a stage runs and after it: planned vs done moving
per item (not per batch), servers by name, real latencies, items/min over the wall time.

The stage runs in its own process (as under a worker), against the fake model server over real
HTTP; `toucan status --json` reads the same DuckDB file from this process while it writes."""

from __future__ import annotations

import asyncio
import itertools
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from cli import app
from flows.runner import run_stage_async
from tests.fake_llm import FakeLlm, answer_from_schema
from tests.synthesize.seed import CATALOG, competent_model, fake_settings, write_config
from toucan.records import Task
from toucan.status import read_run_status
from toucan.store import Store

ROOT = Path(__file__).resolve().parents[2]
ITEMS = 200
RUN_TIMEOUT_S = 300.0  # a loaded 2-core box; the run itself takes about 6 s idle
RATE = """
import asyncio, sys
from flows.runner import run_stage_async
from tests.synthesize.seed import fake_settings
from toucan.status import read_run_status
from toucan.store import Store

settings = fake_settings(sys.argv[1], filter_tasks={"concurrency": 8})
asyncio.run(run_stage_async("filter_tasks", settings, Store(sys.argv[2]), limit=int(sys.argv[3])))
"""


def status_json(store: Store) -> dict[str, Any] | None:
    shown = CliRunner().invoke(app, ["status", "--store", str(store.path), "--json"])
    return json.loads(shown.stdout) if shown.exit_code == 0 else None


def synthesize_tasks(config: Path, store: Store, count: int) -> None:
    settings = fake_settings(config, synthesize={"concurrency": 64})
    asyncio.run(run_stage_async("synthesize", settings, store, limit=count, seed=0))


@pytest.mark.slow
def test_status_shows_planned_and_a_done_count_moving_per_item_while_filter_tasks_runs(
    tmp_path: Path, store: Store, fake_llm: FakeLlm
) -> None:
    config = write_config(tmp_path / "toucan.yaml", fake_llm.base_url)
    synthesize_tasks(config, store, ITEMS + 20)
    assert store.count(Task, "status = 'ok'") >= ITEMS
    # 200 judge calls, 8 in flight: about 25 s of model time, long enough for 5 status reads
    # to see the count move on a loaded box (each read is a CLI call: 1-3 s at load 10)
    fake_llm.latency = 1.0
    rating = subprocess.Popen(
        [sys.executable, "-c", RATE, str(config), str(store.path), str(ITEMS)],
        cwd=ROOT,
        stderr=subprocess.PIPE,
    )
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while rating.poll() is None and time.monotonic() < deadline:
        payload = status_json(store)
        if payload is not None and payload["stage"] == "filter_tasks":
            seen.append(payload)
        time.sleep(0.1)
    assert rating.wait(RUN_TIMEOUT_S) == 0, rating.stderr.read().decode()[-3000:]  # type: ignore[union-attr]

    # a read between the run's start and its plan sees no planned count yet (a knocking
    # reader gets in at once, so such a read happens): those say nothing about progress
    running = [p for p in seen if p["status"] == "running" and p["progress"]["planned"]]
    assert running, "no status was read while the stage ran"
    assert all(p["progress"]["planned"] == ITEMS for p in running)
    done_counts = [p["progress"]["done"] + p["progress"]["failed"] for p in running]
    moves = sum(1 for before, after in itertools.pairwise(done_counts) if after > before)
    assert moves >= 5, done_counts
    # all done while still running is a real moment: the last batch is written, the run's
    # summary not yet (a reader gets in between since the writer lets go when it knocks)
    assert done_counts == sorted(done_counts) and done_counts[-1] <= ITEMS

    final = status_json(store)
    assert final is not None and final["status"] == "completed"
    assert final["progress"] == {"done": ITEMS, "failed": 0, "planned": ITEMS, "fraction": 1.0}
    assert final["items_per_min"] == round(ITEMS / (final["elapsed_s"] / 60), 3)
    servers = {row["server"]: row for row in final["servers"]}
    assert set(servers) <= set(CATALOG) and servers  # names, never ids or "-"
    for row in servers.values():
        assert row["p50_ms"] >= 300 and row["p95_ms"] >= row["p50_ms"]  # each item waited
    # a multi-server task counts once for each of its servers
    assert sum(r["items_done"] for r in servers.values()) >= ITEMS
    (judge,) = final["models"]
    assert judge["calls"] == ITEMS and judge["p50_ms"] >= 300 and judge["p95_ms"] >= 300


MODEL_STAGES = ("synthesize", "filter_tasks", "diversify")


def generator_and_judge(request: dict[str, Any]) -> Any:
    """The competent generator and judge of stage 2 and 3, and a schema-true diversify reply."""
    schema = request.get("response_format", {}).get("json_schema", {}).get("schema", {})
    if "variations" in schema.get("properties", {}):
        return answer_from_schema(request)
    return competent_model(request)


def test_after_each_stage_every_server_row_has_a_name_and_model_stages_real_latency(
    tmp_path: Path, store: Store, fake_llm: FakeLlm
) -> None:
    config = write_config(tmp_path / "toucan.yaml", fake_llm.base_url)
    settings = fake_settings(config, extensions={"diversify_variants": 1})
    fake_llm.default, fake_llm.latency = generator_and_judge, 0.05
    for stage, params in (
        ("synthesize", {"limit": 8, "seed": 0}),
        ("filter_tasks", {}),
        ("irrelevance", {}),
        ("diversify", {}),
    ):
        summary = asyncio.run(run_stage_async(stage, settings, store, **params))
        status = read_run_status(store, summary.run_id)
        assert status is not None and status.servers, stage
        assert {row.server for row in status.servers} <= set(CATALOG), stage
        if stage in MODEL_STAGES:
            assert all(row.p50_ms and row.p50_ms >= 50 for row in status.servers), stage
            assert status.models and all(m.p50_ms and m.p50_ms >= 50 for m in status.models)
        assert status.progress.planned == status.progress.finished > 0, stage
        assert status.progress.failed == 0, stage
