"""The `pipeline` flow over real stages, the stage-completeness rules, and the task runner
choice: the same stage on a local Dask cluster (2 worker processes) writes the same rows."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from flows.completion import explain_incomplete, stage_kwargs
from flows.pipeline import pipeline, plan_stages
from flows.registry import stage
from flows.task_runners import RunnerChoice, make_task_runner
from toucan.errors import ConfigError
from toucan.records import Run, Server, Tool, utc_now
from toucan.store import Store

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "tests" / "servers" / "tiny_server.py"


def write_catalog(tmp_path: Path) -> str:
    servers = [
        {"name": name, "command": sys.executable, "args": [str(TINY)]}
        for name in ("tiny-a", "tiny-b")
    ]
    path = tmp_path / "catalog.yaml"
    path.write_text(yaml.safe_dump({"servers": servers}))
    return str(path)


def onboarded_rows(store: Store) -> tuple[set[Any], set[Any]]:
    """What a run decided, without its run ids, timestamps and latencies."""
    servers = {(s.name, s.status, s.reason, s.tool_count) for s in store.select(Server)}
    tools = {(t.server_id, t.name, t.schema_hash, t.version) for t in store.select(Tool)}
    return servers, tools


def run_pipeline(store: Path, catalog: str, runner: RunnerChoice, **extra: Any) -> Any:
    return asyncio.run(
        pipeline(
            stages=["onboard"],
            store=str(store),
            task_runner=runner,
            stage_params={"onboard": {"catalogs": [catalog]}},
            **extra,
        )
    )


@pytest.fixture
def dask_default_port_taken() -> Iterator[None]:
    """Port 8787 (a Dask scheduler's default HTTP port) held, as by another cluster on the box:
    a local cluster the flow starts must not need it."""
    with socket.socket() as held:
        with contextlib.suppress(OSError):  # already held by something else: the same case
            held.bind(("0.0.0.0", 8787))
            held.listen()
        yield


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.usefixtures("prefect_harness", "dask_default_port_taken")
def test_onboard_on_a_local_dask_cluster_writes_the_same_rows_as_the_default_runner(
    tmp_path: Path,
) -> None:
    catalog = write_catalog(tmp_path)
    threads = run_pipeline(tmp_path / "threads.duckdb", catalog, RunnerChoice())
    dask = run_pipeline(tmp_path / "dask.duckdb", catalog, RunnerChoice(kind="dask", workers=2))
    assert [o.outcome for o in threads.outcomes] == ["ran"]
    assert [o.outcome for o in dask.outcomes] == ["ran"]
    default_rows = onboarded_rows(Store(tmp_path / "threads.duckdb"))
    assert default_rows == onboarded_rows(Store(tmp_path / "dask.duckdb"))
    assert {s[1] for s in default_rows[0]} == {"ok"} and len(default_rows[1]) >= 10

    again = run_pipeline(tmp_path / "threads.duckdb", catalog, RunnerChoice())
    assert [o.outcome for o in again.outcomes] == ["skipped_complete"]


def test_the_pipeline_starts_at_the_first_incomplete_stage(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.duckdb")
    now = utc_now()

    def run(stage: str, minutes: int, status: str = "completed") -> Run:
        start = now + timedelta(minutes=minutes)
        return Run(
            run_id=f"{stage}-{minutes}",
            stage=stage,
            status=status,  # type: ignore[arg-type]
            started_at=start,
            finished_at=start + timedelta(seconds=30),
        )

    store.upsert([run("onboard", 0), run("synthesize", 1), run("filter_tasks", 2, "failed")])
    to_run, reasons = plan_stages(store, ["onboard", "synthesize", "filter_tasks", "export"])
    assert to_run == ["filter_tasks", "export"]
    assert reasons["filter_tasks"] == "last_run_failed"
    assert reasons["export"] == "never_ran"

    store.upsert([run("onboard", 5)])  # new servers after synthesis: synthesis is stale
    assert explain_incomplete(store, "synthesize") == "upstream_changed"
    to_run, _ = plan_stages(store, ["onboard", "synthesize"], force=False)
    assert to_run == ["synthesize"]
    assert plan_stages(store, ["onboard"], force=True)[0] == ["onboard"]


def test_a_stage_with_unrated_tasks_is_pending_even_after_a_completed_run(tmp_path: Path) -> None:
    from toucan.records import Task

    store = Store(tmp_path / "s.duckdb")
    store.upsert([Run(run_id="f", stage="filter_tasks", status="completed", finished_at=utc_now())])
    assert explain_incomplete(store, "filter_tasks") is None
    store.insert([Task(task_id="t1", strategy="single_server", question="q?")])
    assert explain_incomplete(store, "filter_tasks") == "pending_items"


def test_an_unknown_stage_is_refused_and_parameters_are_matched_by_name() -> None:
    with pytest.raises(ConfigError) as refused:
        stage("no_such_stage")
    assert refused.value.reason == "unknown_stage"
    onboard = stage("onboard").flow
    assert onboard is not None and onboard.name == "onboard"
    offered = {"store": "s.duckdb", "profile": None, "limit": 3, "seed": 1, "teachers": ["x"]}
    assert stage_kwargs(onboard, offered) == {"store": "s.duckdb"}


def test_task_runner_choice_builds_each_runner_or_says_what_to_install() -> None:
    from prefect.task_runners import ThreadPoolTaskRunner
    from prefect_dask import DaskTaskRunner

    assert isinstance(make_task_runner("default", workers=3), ThreadPoolTaskRunner)
    assert isinstance(make_task_runner("dask", workers=2), DaskTaskRunner)
    assert isinstance(make_task_runner("dask", address="tcp://10.0.0.1:8786"), DaskTaskRunner)
    try:
        import prefect_ray  # noqa: F401
    except ImportError:
        with pytest.raises(ConfigError, match="prefect-ray"):
            make_task_runner("ray")
    with pytest.raises(ConfigError):
        make_task_runner("spark")  # type: ignore[arg-type]
