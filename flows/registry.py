"""The stages, in running order: the one list the pipeline, the deployments, the CLI and the
demo iterate, and each stage's Prefect flow (its typed parameters are the deployment's form).
Each entry says what the stage reads and writes, how its unfinished work is counted (a named
query of flows/queries.py) and which flow and job run it.

Adding a stage: flows/<name>.py (its job and summary), tasks/<name>.py (its batch function),
its flow and one line here, and prompts/<name>/ when it calls a model (docs/stages.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from prefect import flow

from flows import queries
from flows.diversify import DiversifyJob, DiversifySummary
from flows.export import ExportJob
from flows.filter_tasks import FilterTasksJob, FilterTasksSummary
from flows.filter_trajectories import FilterTrajectoriesJob, FilterTrajectoriesSummary
from flows.irrelevance import IrrelevanceJob, IrrelevanceSummary
from flows.multi_turn import MultiTurnJob, MultiTurnSummary
from flows.onboard import OnboardJob, OnboardSummary
from flows.parameters import documented
from flows.queries import PendingQuery
from flows.report import ReportJob, ReportSummary
from flows.runner import StageJob, run_stage_flow
from flows.synthesize import SynthesizeJob, SynthesizeSummary
from flows.trajectories import TrajectoriesJob, TrajectoriesSummary
from tasks.export_files import ExportSummary
from toucan.config import Settings
from toucan.errors import ConfigError


def stage_flow(name: str) -> Callable[[Callable[..., Any]], Any]:
    """Every stage flow: no result persistence (the store is the record), parameters as given
    (the CLI, the pipeline and the deployment forms pass typed values), each parameter
    described in the deployment form (flows/parameters.py)."""

    def register(fn: Callable[..., Any]) -> Any:
        options = {"log_prints": False, "persist_result": False, "validate_parameters": False}
        return flow(name=name, **options)(documented(name)(fn))

    return register


@stage_flow(name="onboard")
def onboard_flow(
    store: str | None = None,
    config: str | None = None,
    profile: str | None = None,
    catalogs: list[str] | None = None,
    specs_only: bool = False,
) -> OnboardSummary:
    """Onboard MCP servers from the given catalogs (default: the bundled fleet)."""
    return run_stage_flow(
        OnboardJob,
        store=store,
        config=config,
        profile=profile,
        catalogs=catalogs,
        specs_only=specs_only,
    )


@stage_flow(name="synthesize")
def synthesize_flow(
    store: str | None = None,
    config: str | None = None,
    profile: str | None = None,
    strategies: list[str] | None = None,
    per_server: int | None = None,
    limit: int | None = None,
    seed: int | None = None,
) -> SynthesizeSummary:
    """Synthesize tasks over the servers in the store; a re-run finishes what is missing."""
    return run_stage_flow(
        SynthesizeJob,
        store=store,
        config=config,
        profile=profile,
        strategies=strategies,
        per_server=per_server,
        limit=limit,
        seed=seed,
    )


@stage_flow(name="filter_tasks")
def filter_tasks_flow(
    store: str | None = None,
    config: str | None = None,
    profile: str | None = None,
    limit: int | None = None,
) -> FilterTasksSummary:
    """Judge the tasks that have no rating yet; keep those above the thresholds."""
    return run_stage_flow(FilterTasksJob, store=store, config=config, profile=profile, limit=limit)


@stage_flow(name="trajectories")
def trajectories_flow(
    store: str | None = None,
    config: str | None = None,
    profile: str | None = None,
    teachers: list[str] | None = None,
    styles: list[str] | None = None,
    limit: int | None = None,
) -> TrajectoriesSummary:
    """Run each kept task with each teacher on its live MCP servers (the missing ones only)."""
    return run_stage_flow(
        TrajectoriesJob,
        store=store,
        config=config,
        profile=profile,
        teachers=teachers,
        styles=styles,
        limit=limit,
    )


@stage_flow(name="filter_trajectories")
def filter_trajectories_flow(
    store: str | None = None,
    config: str | None = None,
    profile: str | None = None,
    limit: int | None = None,
) -> FilterTrajectoriesSummary:
    """Flag and judge the trajectories that have no rating yet; keep by the configured rule."""
    return run_stage_flow(
        FilterTrajectoriesJob, store=store, config=config, profile=profile, limit=limit
    )


@stage_flow(name="irrelevance")
def irrelevance_flow(
    store: str | None = None,
    config: str | None = None,
    profile: str | None = None,
    seed: int | None = None,
) -> IrrelevanceSummary:
    """Pair kept tasks with servers that cannot solve them; a re-run adds nothing new."""
    return run_stage_flow(IrrelevanceJob, store=store, config=config, profile=profile, seed=seed)


@stage_flow(name="diversify")
def diversify_flow(
    store: str | None = None,
    config: str | None = None,
    profile: str | None = None,
    variants: int | None = None,
    seed: int | None = None,
) -> DiversifySummary:
    """Rewrite kept tasks for other personas and with added constraints."""
    return run_stage_flow(
        DiversifyJob, store=store, config=config, profile=profile, variants=variants, seed=seed
    )


@stage_flow(name="multi-turn")
def multi_turn_flow(
    store: str | None = None,
    config: str | None = None,
    profile: str | None = None,
    methods: list[str] | None = None,
    follow_ups: int | None = None,
) -> MultiTurnSummary:
    """Split kept multi-tool tasks and extend kept trajectories into conversations."""
    return run_stage_flow(
        MultiTurnJob,
        store=store,
        config=config,
        profile=profile,
        methods=methods,
        follow_ups=follow_ups,
    )


@stage_flow(name="export")
def export_flow(
    store: str | None = None,
    config: str | None = None,
    profile: str | None = None,
    out_dir: str | None = None,
    formats: list[str] | None = None,
    mix: str = "none",
    overwrite: bool = False,
    seed: int = 0,
) -> ExportSummary:
    """Export the kept trajectories as a scrubbed dataset folder with a card.

    Without `out_dir`, each run writes `<store dir>/exports/<run id>/` and points
    `exports/latest` at it, or writes nothing (`nothing_new`) when the rows are those of the
    latest export; an existing `out_dir` is refused unless `overwrite`."""
    return run_stage_flow(
        ExportJob,
        store=store,
        config=config,
        profile=profile,
        out_dir=out_dir,
        formats=formats,
        mix=mix,
        overwrite=overwrite,
        seed=seed,
    )


@stage_flow(name="report")
def report_flow(
    store: str | None = None,
    config: str | None = None,
    profile: str | None = None,
    out: str | None = None,
) -> ReportSummary:
    """Write the HTML report over the store (read-only: runs beside a writing stage).

    Without `out`, each run writes `<store dir>/exports/<run id>.html` and points
    `exports/latest.html` at it."""
    return run_stage_flow(ReportJob, store=store, config=config, profile=profile, out=out)  # fmt: skip


@dataclass(frozen=True)
class StageDef:
    """One stage. `name` is the module name in flows/, tasks/ and prompts/; `command` the CLI
    command and deployment name; `pending` counts unfinished items (None: the stage has no
    item ledger, so only its run history says whether it is complete)."""

    name: str
    command: str
    reads: tuple[str, ...]
    writes: tuple[str, ...]
    pending: PendingQuery | None
    flow: Any  # the prefect Flow
    job: type[StageJob[Any]]

    @property
    def description(self) -> str:
        """One line for the CLI, the deployments and the docs: the flow's docstring."""
        return str(self.flow.description or self.name).strip().splitlines()[0]


STAGES: tuple[StageDef, ...] = (
    StageDef("onboard", "onboard", ("catalogs",), ("servers", "tools"), None, onboard_flow,
             OnboardJob),
    StageDef("synthesize", "synthesize", ("servers", "tools", "tasks", "dedup_index"),
             ("tasks", "dedup_index"), queries.pending_synthesize, synthesize_flow,
             SynthesizeJob),
    StageDef("filter_tasks", "filter-tasks", ("tasks",), ("task_ratings",),
             queries.pending_filter_tasks, filter_tasks_flow, FilterTasksJob),
    StageDef("trajectories", "trajectories", ("tasks", "task_ratings", "servers"),
             ("trajectories", "tool_calls"), queries.pending_trajectories, trajectories_flow,
             TrajectoriesJob),
    StageDef("filter_trajectories", "filter-trajectories", ("trajectories", "tasks"),
             ("trajectory_ratings",), queries.pending_filter_trajectories,
             filter_trajectories_flow, FilterTrajectoriesJob),
    StageDef("irrelevance", "irrelevance", ("tasks", "task_ratings", "servers"), ("tasks",),
             queries.pending_irrelevance, irrelevance_flow, IrrelevanceJob),
    StageDef("diversify", "diversify", ("tasks", "task_ratings", "tools"), ("tasks",),
             queries.pending_diversify, diversify_flow, DiversifyJob),
    StageDef("multi_turn", "multi-turn", ("tasks", "trajectories", "trajectory_ratings"),
             ("trajectories", "tool_calls"), queries.pending_multi_turn, multi_turn_flow,
             MultiTurnJob),
    StageDef("export", "export", ("trajectories", "trajectory_ratings", "tasks", "servers"),
             ("dataset folder",), None, export_flow, ExportJob),
    StageDef("report", "report", ("every table",), ("report.html",), None, report_flow,
             ReportJob),
)  # fmt: skip
STAGE_NAMES: tuple[str, ...] = tuple(s.name for s in STAGES)
# the pipeline's typed parameters (a form in the Prefect UI): derived, never kept by hand
StageName = Literal[STAGE_NAMES]  # type: ignore[valid-type]


def stage(name: str) -> StageDef:
    """The stage called `name` ("filter-tasks" or "filter_tasks"); ConfigError if unknown."""
    key = normalize_stage(name)
    for entry in STAGES:
        if entry.name == key:
            return entry
    raise ConfigError(
        f"unknown stage {name!r}; stages: {', '.join(STAGE_NAMES)}", reason="unknown_stage"
    )


def normalize_stage(name: str) -> str:
    """A stage or command name as the stage's module name."""
    return name.strip().lower().replace("-", "_")


def check_settings(settings: Settings) -> None:
    """Refuse settings that name a stage the registry does not hold (`budget.per_stage`):
    such a cap would never apply. ConfigError `bad_config`. Every stage run checks this on
    start (flows/runner.py); `toucan config` too."""
    unknown = sorted(set(settings.budget.per_stage) - set(STAGE_NAMES))
    if unknown:
        raise ConfigError(
            f"invalid settings: budget.per_stage: no stage named {unknown}; "
            f"known: {', '.join(STAGE_NAMES)}"
        )
