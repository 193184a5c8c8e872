"""The Prefect deployments of toucan: one per stage of the registry, plus `pipeline`.

Deployments point at the flows by module path (`flows.pipeline.pipeline`), so a worker runs
them from the installed project: the venv on one machine, the image in docker-compose. The
UI renders each flow's typed signature as a form. Every deployment runs one flow run at a
time (`concurrency_limit=1`): a store has one writer, and a second run would only wait for the
writer lock. Schedules are defined but off unless `toucan deploy --schedules` turns them on.

Each deployment carries absolute paths, so its runs do the same whichever directory started
the worker: it runs flows in the project directory (`find_project_dir`), and its environment
names the store, the fleet and the settings file as absolute paths (`project_environment`;
relative paths in the settings are taken from the project directory).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

from flows.registry import STAGES, StageDef, stage

# the checkout this code runs from (a clone: `uv run toucan`), where `.fleet` is installed
CHECKOUT = Path(__file__).resolve().parents[1]
PROJECT_MARKERS = ("toucan.yaml", ".fleet")  # a directory holding either is a project
CONFIG_FILE = "toucan.yaml"

WORK_POOL = "toucan"
WORK_POOL_TYPE = "process"
TAGS = ["toucan"]


@dataclass(frozen=True)
class DeploymentSpec:
    """What to register for one flow; `schedules` are (kind, value) pairs: cron or interval."""

    flow_name: str
    name: str
    description: str
    parameters: dict[str, Any] = field(default_factory=dict)
    schedules: tuple[tuple[str, Any], ...] = ()


# Examples an operator edits: a nightly full pipeline, trajectories topped up every 6 hours.
SCHEDULES: dict[str, tuple[tuple[str, Any], ...]] = {
    "pipeline": (("cron", "0 2 * * *"),),
    "trajectories": (("interval", timedelta(hours=6)),),
}


def deployment_specs(stages: tuple[StageDef, ...] = STAGES) -> list[DeploymentSpec]:
    """The pipeline plus one deployment per stage, named by its command."""
    specs = [
        DeploymentSpec(
            flow_name="pipeline",
            name="pipeline",
            description="Every stage in order, skipping the complete ones; resumable.",
            schedules=SCHEDULES["pipeline"],
        )
    ]
    for entry in stages:
        specs.append(
            DeploymentSpec(
                flow_name=entry.name,
                name=entry.command,
                description=entry.description,
                schedules=SCHEDULES.get(entry.name, ()),
            )
        )
    return specs


def build_schedules(spec: DeploymentSpec, active: bool) -> list[Any]:
    from prefect.schedules import Cron, Interval

    built = []
    for kind, value in spec.schedules:
        if kind == "cron":
            built.append(Cron(value, timezone="UTC", active=active))
        else:
            built.append(Interval(value, timezone="UTC", active=active))
    return built


def flow_for(spec: DeploymentSpec) -> Any:
    if spec.flow_name == "pipeline":
        from flows.pipeline import pipeline

        return pipeline
    return stage(spec.flow_name).flow


def ensure_work_pool(name: str = WORK_POOL) -> None:
    """Create the process work pool when the API does not have it yet."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists

    with get_client(sync_client=True) as client, contextlib.suppress(ObjectAlreadyExists):
        client.create_work_pool(WorkPoolCreate(name=name, type=WORK_POOL_TYPE))


def find_project_dir(explicit: Path | None = None) -> Path:
    """The directory flow runs start in, absolute: `explicit` (--project-dir), else
    TOUCAN_PROJECT_DIR, else the current directory when it holds a project (a toucan.yaml or
    a .fleet), else the toucan checkout the code runs from, else the current directory."""
    if explicit is not None:
        return explicit.resolve()
    if configured := os.environ.get("TOUCAN_PROJECT_DIR"):
        return Path(configured).resolve()
    here = Path.cwd().resolve()
    if any((here / marker).exists() for marker in PROJECT_MARKERS):
        return here
    if (CHECKOUT / "pyproject.toml").exists():
        return CHECKOUT
    return here


def project_environment(project: Path) -> dict[str, str]:
    """The environment of the deployments' flow runs: the settings file (TOUCAN_CONFIG, when
    there is one), the store (TOUCAN_STORE) and the fleet (TOUCAN_MCP__FLEET_DIR), absolute.
    The settings are those a run in `project` would load; a relative path among them is
    taken from `project`. A `store` parameter given to a run still wins over TOUCAN_STORE."""
    from toucan.config import load_settings

    configured = os.environ.get("TOUCAN_CONFIG")
    config = Path(configured).resolve() if configured else project / CONFIG_FILE
    settings = load_settings(config if config.exists() else None)
    env = {
        "TOUCAN_STORE": str((project / settings.store).resolve()),
        "TOUCAN_MCP__FLEET_DIR": str((project / settings.mcp.fleet_dir).resolve()),
    }
    if config.exists():
        env["TOUCAN_CONFIG"] = str(config)
    return env


def register_deployments(
    *,
    work_pool: str = WORK_POOL,
    schedules_active: bool = False,
    only: list[str] | None = None,
    working_dir: Path | None = None,
) -> dict[str, UUID]:
    """Register (create or update) the deployments against PREFECT_API_URL; name -> id.

    `working_dir` (default: `find_project_dir()`) is the project directory the worker runs
    the flows in (without one a process worker would use a fresh temporary directory); the
    store, fleet and settings file go with each deployment as absolute paths
    (`project_environment`).
    """
    project = find_project_dir(working_dir)
    job_variables = {"working_dir": str(project), "env": project_environment(project)}
    from prefect.deployments.runner import EntrypointType

    ensure_work_pool(work_pool)
    registered: dict[str, UUID] = {}
    for spec in deployment_specs():
        if only and spec.flow_name not in only and spec.name not in only:
            continue
        deployment = flow_for(spec).to_deployment(
            name=spec.name,
            description=spec.description,
            parameters=spec.parameters,
            schedules=build_schedules(spec, schedules_active),
            tags=TAGS,
            concurrency_limit=1,
            work_pool_name=work_pool,
            entrypoint_type=EntrypointType.MODULE_PATH,
            job_variables=job_variables,
        )
        registered[f"{deployment.flow_name}/{spec.name}"] = deployment.apply(
            work_pool_name=work_pool, _sync=True
        )
    return registered
