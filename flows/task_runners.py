"""The task runner a stage flow fans out on: threads on this machine, or a Dask / Ray cluster.

Whatever the runner, tasks return records to the flow run, which stays the single DuckDB
writer. A stage flow applies the choice with `flow.with_options(task_runner=...)`; the
`pipeline` flow and `toucan deploy` pass the same three fields as parameters.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from toucan.errors import ConfigError

RunnerKind = Literal["default", "dask", "ray"]


class RunnerChoice(BaseModel):
    """Typed parameter block for flows and deployments (the Prefect UI renders it as a form)."""

    model_config = ConfigDict(extra="forbid")

    kind: RunnerKind = Field("default", description="default = threads in the flow process")
    address: str | None = Field(
        None, description="Existing cluster: tcp://host:8786 (Dask) or ray://host:10001 (Ray)"
    )
    workers: int = Field(4, ge=1, description="Threads, or local cluster workers when no address")


def make_task_runner(
    kind: RunnerKind = "default", address: str | None = None, workers: int = 4
) -> Any:
    """A Prefect task runner.

    - default: ThreadPoolTaskRunner(max_workers=workers);
    - dask: DaskTaskRunner on the cluster at `address`, else a LocalCluster of `workers`
      processes (one thread each) started for the flow run and stopped after it;
    - ray: RayTaskRunner on `address` (e.g. ray://head:10001), else a local Ray instance.
    """
    if kind == "default":
        from prefect.task_runners import ThreadPoolTaskRunner

        return ThreadPoolTaskRunner(max_workers=workers)
    if kind == "dask":
        try:
            from prefect_dask import DaskTaskRunner
        except ImportError as exc:
            raise ConfigError(
                "task runner 'dask' needs prefect-dask: install toucan with the `dask` extra "
                "(uv sync --extra dask)"
            ) from exc
        if address:
            return DaskTaskRunner(address=address)
        return DaskTaskRunner(
            cluster_class="distributed.LocalCluster",
            cluster_kwargs={
                "n_workers": workers,
                "threads_per_worker": 1,
                "processes": True,
                # a free port: None still serves the scheduler's HTTP routes on 8787, and a
                # second local cluster on the box (another run, a test) then fails to start
                "dashboard_address": ":0",
            },
        )
    if kind == "ray":
        try:
            from prefect_ray import RayTaskRunner
        except ImportError as exc:
            raise ConfigError(
                "task runner 'ray' needs prefect-ray: install toucan with the `ray` extra "
                "(uv sync --extra ray)"
            ) from exc
        return RayTaskRunner(address=address) if address else RayTaskRunner()
    raise ConfigError(f"unknown task runner {kind!r}: use default, dask or ray")


def runner_from_choice(choice: RunnerChoice | dict[str, Any] | None) -> Any:
    picked = RunnerChoice.model_validate(choice or {})
    return make_task_runner(picked.kind, picked.address, picked.workers)
