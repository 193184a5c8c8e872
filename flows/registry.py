"""The stages, in running order: the one list the pipeline, the deployments, the CLI and the
demo iterate. Each entry says what the stage reads and writes, how its unfinished work is
counted (a named query of flows/queries.py) and which flow runs it.

Adding a stage: flows/<name>.py (its job and @flow), tasks/<name>.py (its batch function),
one line here, and prompts/<name>/ when it calls a model (docs/stages.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from flows import queries
from flows.diversify import DiversifyJob, diversify_flow
from flows.export import ExportJob, export_flow
from flows.filter_tasks import FilterTasksJob, filter_tasks_flow
from flows.filter_trajectories import FilterTrajectoriesJob, filter_trajectories_flow
from flows.irrelevance import IrrelevanceJob, irrelevance_flow
from flows.multi_turn import MultiTurnJob, multi_turn_flow
from flows.onboard import OnboardJob, onboard_flow
from flows.queries import PendingQuery
from flows.report import ReportJob, report_flow
from flows.runner import StageJob
from flows.synthesize import SynthesizeJob, synthesize_flow
from flows.trajectories import TrajectoriesJob, trajectories_flow
from toucan.errors import ConfigError


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
    description: str


STAGES: tuple[StageDef, ...] = (
    StageDef("onboard", "onboard", ("catalogs",), ("servers", "tools"), None, onboard_flow,
             OnboardJob, "Onboard MCP servers: connect, list and probe tools, store them."),
    StageDef("synthesize", "synthesize", ("servers", "tools"), ("tasks",), None, synthesize_flow,
             SynthesizeJob, "Synthesize tasks over the onboarded servers' tools."),
    StageDef("filter_tasks", "filter-tasks", ("tasks",), ("task_ratings",),
             queries.pending_filter_tasks, filter_tasks_flow, FilterTasksJob,
             "Judge the synthesized tasks; keep those above the thresholds."),
    StageDef("trajectories", "trajectories", ("tasks", "task_ratings", "servers"),
             ("trajectories", "tool_calls"), queries.pending_trajectories, trajectories_flow,
             TrajectoriesJob, "Run each kept task with each teacher on live MCP servers."),
    StageDef("filter_trajectories", "filter-trajectories", ("trajectories", "tasks"),
             ("trajectory_ratings",), queries.pending_filter_trajectories,
             filter_trajectories_flow, FilterTrajectoriesJob,
             "Flag and judge each trajectory; keep by the configured rule."),
    StageDef("irrelevance", "irrelevance", ("tasks", "task_ratings", "servers"), ("tasks",),
             queries.pending_irrelevance, irrelevance_flow, IrrelevanceJob,
             "Pair kept tasks with servers that cannot solve them."),
    StageDef("diversify", "diversify", ("tasks", "task_ratings", "tools"), ("tasks",),
             queries.pending_diversify, diversify_flow, DiversifyJob,
             "Rewrite kept tasks for other personas and with added constraints."),
    StageDef("multi_turn", "multi-turn", ("tasks", "trajectories", "trajectory_ratings"),
             ("trajectories", "tool_calls"), None, multi_turn_flow, MultiTurnJob,
             "Split multi-tool tasks and extend kept trajectories into conversations."),
    StageDef("export", "export", ("trajectories", "trajectory_ratings", "tasks", "servers"),
             ("dataset folder",), None, export_flow, ExportJob,
             "Export kept trajectories as a scrubbed dataset with a card."),
    StageDef("report", "report", ("every table",), ("report.html",), None, report_flow,
             ReportJob, "Write the HTML report over the store."),
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
