"""Stages on a Dask cluster of worker *processes* write the rows the default runner writes.

One `distributed.LocalCluster` (2 worker processes, 1 thread each) serves both tests; the flows
reach it through `make_task_runner("dask", address=...)`, the setting an operator uses for the
docker-compose cluster. Every batch crosses a process boundary (its lane, reply cache and
progress counter pickled), calls the fake model server over HTTP and, for trajectories, real
fleet servers, and returns its rows to the flow run, the one writer of the store.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flows.registry import filter_tasks_flow, trajectories_flow
from flows.runner import run_stage_async
from flows.task_runners import make_task_runner
from tasks.filter_tasks import DIMENSIONS
from tests.fake_llm import FakeLlm, Rule
from tests.synthesize.seed import (
    FAKE_KEY_ENV,
    JUDGE,
    competent_model,
    fake_settings,
    judge_with,
    request_digest,
    seed_servers,
    write_config,
)
from tests.trajectories import helpers as agent
from tests.trajectories.test_flow import FLEET_CALLS, fleet_specs
from toucan.progress import ProgressUpdate, listening
from toucan.records import LlmCacheEntry, Task, TaskRating, Trajectory
from toucan.store import Store

pytestmark = pytest.mark.skipif(
    not (agent.fleet_dir() / "venvs").exists(),
    reason="the fleet is not installed (toucan fleet install)",
)

TASKS = 12
FLEET_SERVERS = ("calculator", "math", "mcp-server-time")


@pytest.fixture(scope="module")
def cluster_address() -> Iterator[str]:
    """A LocalCluster of two worker processes with one thread each, for the module's tests."""
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
    ) as cluster:
        yield cluster.scheduler_address


def varied_judge(request: dict[str, Any]) -> dict[str, Any]:
    """The judge keeps about two tasks in three and rejects the others for realism, decided by
    the request's content, so both runners must pair each verdict with its own task."""
    low = {"scenario_realism": 2} if request_digest(request) % 3 == 0 else {}
    return judge_with(dict.fromkeys(DIMENSIONS, 5) | low)(request)


def verdicts(store: Store) -> set[tuple[Any, ...]]:
    """What a filter-tasks run decided, without its run id and timings."""
    return {
        (r.rating_id, r.task_id, r.keep, r.reason, r.overall, r.judge, repr(r.scores), r.status)
        for r in store.select(TaskRating)
    }


def trajectory_rows(store: Store) -> set[tuple[Any, ...]]:
    """What a trajectories run wrote, without its run id, timings and latencies."""
    return {
        (
            t.trajectory_id,
            t.task_id,
            t.style,
            t.status,
            t.stop_reason,
            repr(t.messages),
            repr([(c.server, c.tool, c.is_error) for c in t.tool_call_log]),
        )
        for t in store.select(Trajectory)
    }


class ProgressSeen(logging.Handler):
    """The progress updates reported in this process (the flow run's), in order."""

    def __init__(self) -> None:
        super().__init__()
        self.updates: list[ProgressUpdate] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.updates.append(record.progress)  # type: ignore[attr-defined]


def run_on_both(
    stage_flow: Any, base: Path, config: Path, address: str
) -> tuple[Store, Store, list[ProgressUpdate]]:
    """The stage on copies of `base`: on the default runner, then on the cluster at `address`;
    and the progress the flow run reported during the cluster run."""
    threads, dask = (base.with_name(f"{name}.duckdb") for name in ("threads", "dask"))
    for target in (threads, dask):
        shutil.copyfile(base, target)
    stage_flow(store=str(threads), config=str(config), profile="cloud")
    seen = ProgressSeen()
    with listening(seen):
        run_on_cluster(stage_flow, dask, config, address)
    return Store(threads), Store(dask), seen.updates


def run_on_cluster(stage_flow: Any, store: Path, config: Path, address: str) -> Any:
    """The stage on `store`, its batches on the cluster at `address`."""
    on_cluster = stage_flow.with_options(task_runner=make_task_runner("dask", address=address))
    return on_cluster(store=str(store), config=str(config), profile="cloud")


@pytest.mark.slow
def test_filter_tasks_on_dask_worker_processes_keeps_and_rejects_the_same_tasks(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    cluster_address: str,
    prefect_harness: None,
) -> None:
    monkeypatch.setenv(FAKE_KEY_ENV, "sk-fake")  # the workers read it from their environment
    with FakeLlm(default=competent_model) as fake_llm:
        fake_llm.script([Rule(model=JUDGE, respond=varied_judge)])
        config = write_config(tmp_path / "toucan.yaml", fake_llm.base_url)
        base = Store(tmp_path / "base.duckdb")
        seed_servers(base)
        asyncio.run(run_stage_async("synthesize", fake_settings(config), base, limit=TASKS, seed=0))
        assert base.count(Task) == TASKS
        threads, dask, progress = run_on_both(filter_tasks_flow, base.path, config, cluster_address)

    expected = verdicts(threads)
    assert len(expected) == TASKS and {v[2] for v in expected} == {True, False}
    assert verdicts(dask) == expected
    cached = {e.cache_key for e in threads.select(LlmCacheEntry)}
    assert {e.cache_key for e in dask.select(LlmCacheEntry)} == cached
    # the items were counted on the workers' copies; the flow run's count caught up
    assert (progress[-1].done, progress[-1].total) == (TASKS, TASKS)


@pytest.mark.slow
def test_trajectories_on_dask_worker_processes_hold_the_same_rows_and_tool_results(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    cluster_address: str,
    prefect_harness: None,
) -> None:
    monkeypatch.setenv(agent.FAKE_KEY_ENV, "sk-fake")
    specs = {name: spec for name, spec in fleet_specs().items() if name in FLEET_SERVERS}
    rows = {name: agent.server_row(spec) for name, spec in specs.items()}
    tasks = [
        agent.kept_task(f"[{name}] q{n}", [rows[name]], [(rows[name], FLEET_CALLS[name][0])])
        for name in specs
        for n in range(2)
    ]
    script = {f"[{name}]": [[FLEET_CALLS[name]]] for name in specs}
    with FakeLlm() as fake_llm:
        fake_llm.script([agent.dispatch_script(script)])
        config = agent.write_config(
            tmp_path / "toucan.yaml",
            fake_llm.base_url,
            trajectories={"concurrency": 2, "styles": ["function-calling", "react"]},
        )
        base = Store(tmp_path / "base.duckdb")
        agent.seed_store(base, list(rows.values()), tasks)
        threads, dask, _ = run_on_both(trajectories_flow, base.path, config, cluster_address)
        # the rows gone, their replies and tool calls kept (as after a kill -9): the rerun's
        # batches read every teacher reply from the store's file on the workers, read-only
        # while the flow run holds it, and replay every tool result
        dask.execute("DELETE FROM trajectories")
        fake_llm.reset()
        rerun = run_on_cluster(trajectories_flow, dask.path, config, cluster_address)
        assert fake_llm.calls.total == 0
        assert rerun.replayed_tool_calls == len(tasks) * 2

    expected = trajectory_rows(threads)
    assert len(expected) == len(tasks) * 2 and {t[3] for t in expected} == {"ok"}
    assert all(FLEET_CALLS[name][0] in repr(expected) for name in specs)
    assert trajectory_rows(dask) == expected
