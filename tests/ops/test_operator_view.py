"""What an operator sees in the Prefect UI without reading code: the pipeline's stage table
(planned / done / failed / retryable, wall time, cost), each stage's log lines (planned, finished,
failed by reason, where the output went), a link artifact to the report, and progress bars that
reach 100 %. Runs on the Prefect test server, with real stages on a real DuckDB file."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from pathlib import Path
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

from flows.pipeline import pipeline
from tests.fake_llm import FakeLlm, Rule
from tests.synthesize.conftest import fake_llm
from tests.synthesize.seed import JUDGE, seed_servers, write_config
from toucan.store import Store

__all__ = ["fake_llm"]  # the fixture


def latest_artifact(key: str) -> Any:
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key]))
        )
    assert found, f"no artifact {key}"
    return max(found, key=lambda a: a.created)


@pytest.mark.timeout(600)
@pytest.mark.usefixtures("prefect_harness")
def test_a_pipeline_run_tells_the_operator_what_each_stage_did(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, fake_llm: FakeLlm
) -> None:
    caplog.set_level(logging.INFO, logger="prefect.flow_runs")
    caplog.set_level(logging.INFO, logger="flows.stage_log")
    store = Store(tmp_path / "s.duckdb")
    seed_servers(store)
    config = write_config(tmp_path / "toucan.yaml", fake_llm.base_url)
    report = tmp_path / "out" / "report.html"
    fake_llm.script([Rule(model=JUDGE, status=400, times=2)])  # two tasks' ratings fail
    stages = ["synthesize", "filter_tasks", "irrelevance", "report"]
    outcome = asyncio.run(
        pipeline(
            stages=stages,  # type: ignore[arg-type]
            store=str(store.path),
            config=str(config),
            profile="cloud",
            limit=6,
            stage_params={"report": {"out": str(report)}},
        )
    )
    assert [o.outcome for o in outcome.outcomes] == ["ran"] * 4

    rows = {row["stage"]: row for row in json.loads(latest_artifact("pipeline-stages").data)}
    assert list(rows) == stages
    rated = rows["filter_tasks"]
    assert (rated["planned"], rated["done"], rated["failed"]) == (6, 4, 2)
    assert rated["retryable"] == 0  # a 400 is a final answer (toucan.errors)
    assert rated["status"] == "completed" and rated["wall_s"] > 0
    assert rated["cost_usd"] is not None  # it called the judge
    assert rows["irrelevance"]["cost_usd"] is None  # no model
    for stage in ("synthesize", "filter_tasks", "irrelevance"):
        assert latest_artifact(f"{stage.replace('_', '-')}-progress").data == 100.0, stage

    link = latest_artifact("report-output")
    assert report.resolve().as_uri() in link.data and report.exists()

    lines = [r.getMessage() for r in caplog.records]
    assert any(line.startswith("filter_tasks: planned 6 items (0 done") for line in lines), lines
    finished = [line for line in lines if line.startswith("filter_tasks: finished 6 of 6 planned")]
    assert len(finished) == 1 and re.search(r"; failed 2 \([a-z_]+ 2\)$", finished[0]), lines
    wrote = f"filter_tasks: output in task_ratings of {store.path.resolve()}"
    assert wrote in lines and f"report: output in {report.resolve()}" in lines
