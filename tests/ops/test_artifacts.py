"""Stage runs publish per-server/per-model/spend tables and a moving progress bar as Prefect
artifacts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

from flows.artifacts import artifact_key, publish_run_tables
from flows.run_context import stage_run
from toucan.config import load_settings
from toucan.progress import report_progress
from toucan.records import Run
from toucan.status import build_run_status, events_frame
from toucan.store import Store

from .test_status import seeded_events


@flow(name="artifact-probe", persist_result=False)
def probe_stage(store_path: str) -> str:
    """A miniature stage: three items on two servers, progress reported after each."""
    settings = load_settings(None, profile="local")
    with stage_run(Store(store_path), settings, "filter_tasks") as ctx:
        for done, server in enumerate(["alpha", "alpha", "beta"], start=1):
            ctx.events.record(item_id=f"i{done}", server=server, latency_ms=10.0 * done)
            ctx.events.record(
                kind="llm_call", model="judge", tokens_in=5, tokens_out=5, cost_usd=0.25
            )
            report_progress("filter_tasks", done, 3)
        ctx.events.record(kind="llm_call", model="judge", status="cached")
        return ctx.run_id


def read_flow_run_artifacts(flow_run_id: str) -> dict[str, object]:
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    return {a.key: a.data for a in found}


@pytest.mark.usefixtures("prefect_harness")
def test_a_stage_run_publishes_server_and_model_tables_and_a_full_progress_bar(
    tmp_path: Path,
) -> None:
    state = probe_stage(str(tmp_path / "s.duckdb"), return_state=True)
    assert state.is_completed()
    artifacts = read_flow_run_artifacts(str(state.state_details.flow_run_id))
    servers = json.loads(artifacts["filter-tasks-servers"])  # type: ignore[arg-type]
    assert {row["server"]: row["items_done"] for row in servers} == {"alpha": 2, "beta": 1}
    models = json.loads(artifacts["filter-tasks-models"])  # type: ignore[arg-type]
    assert models[0]["model"] == "judge" and models[0]["calls"] == 4
    spend = json.loads(artifacts["filter-tasks-spend"])  # type: ignore[arg-type]
    assert spend == [
        {"model": "judge", "paid_calls": 3, "cached_calls": 1, "spent_usd": 0.75},
        {"model": "total", "paid_calls": 3, "cached_calls": 1, "spent_usd": 0.75},
    ]
    assert artifacts["filter-tasks-progress"] == 100.0


def test_outside_a_flow_run_publishing_is_a_no_op() -> None:
    status = build_run_status(Run(run_id="r", stage="x"), events_frame(seeded_events()))
    assert publish_run_tables(status) == []


def test_artifact_keys_use_only_lowercase_letters_digits_and_dashes() -> None:
    assert artifact_key("filter_tasks", "servers") == "filter-tasks-servers"
    assert artifact_key("Multi Turn!", "models") == "multi-turn-models"
