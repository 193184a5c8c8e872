"""The `pipeline` flow: every stage in order, each as a subflow, skipping the complete ones.

It starts at the first stage that is not complete on the store (see flows/completion.py) and
runs that stage and every stage after it, in the registry's order (flows/registry.py). A
failed stage stops the pipeline (later stages depend on it) and fails the flow run; retrying
it from the Prefect UI resumes, because each stage skips the items it already finished.

A stage that ended with error rows or produced nothing (flows/outcome.py) does not stop the
ones after it (they use what it did produce); the pipeline run then ends in the same named
state, `CompletedWithErrors` or `NothingProduced`, its message summing the stages'. The next
pipeline run starts at a stage with retryable items left, so it retries exactly those.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from typing import Any, Literal

from prefect import flow
from pydantic import BaseModel, ConfigDict, Field

from flows.artifacts import artifact_key, publish_table, server_table
from flows.completion import explain_incomplete, latest_runs, stage_kwargs
from flows.estimate import estimate_run
from flows.outcome import RunOutcome, combine_outcomes, outcome_state
from flows.parameters import documented
from flows.registry import STAGE_NAMES, StageName, normalize_stage
from flows.registry import stage as stage_def
from flows.task_runners import RunnerChoice, runner_from_choice
from toucan.config import Settings, load_settings
from toucan.estimate import Estimate, estimate_table
from toucan.records import Run
from toucan.stage_table import stage_row
from toucan.status import read_run_status
from toucan.store import Store, resolve_store_path

logger = logging.getLogger(__name__)

Outcome = Literal["ran", "failed", "skipped_complete", "not_reached", "estimated"]


class StageOutcome(BaseModel):
    model_config = ConfigDict(extra="forbid")

    stage: str
    outcome: Outcome
    reason: str | None = None  # why it ran (never_ran, pending_items, ...) or why it failed
    state: str | None = None  # the Prefect state name of its run (CompletedWithErrors, ...)
    message: str | None = None  # that state's message
    run_id: str | None = None
    summary: dict[str, Any] = Field(default_factory=dict)


class PipelineReport(BaseModel):
    model_config = ConfigDict(extra="forbid")

    store: str
    outcomes: list[StageOutcome]
    estimate: Estimate | None = None  # a dry run's: what the stages would cost

    @property
    def failed(self) -> list[StageOutcome]:
        return [o for o in self.outcomes if o.outcome == "failed"]

    def run_outcomes(self) -> dict[str, RunOutcome]:
        """The outcome of each stage that ran, as its run row recorded it."""
        return {
            o.stage: RunOutcome.model_validate(o.summary.get("outcome") or {})
            for o in self.outcomes
            if o.outcome == "ran"
        }


class StageFailed(RuntimeError):
    """A stage subflow ended Failed/Crashed; the pipeline stops there."""


def plan_stages(
    store: Store, wanted: list[str], force: bool = False, settings: Settings | None = None
) -> tuple[list[str], dict[str, str | None]]:
    """Which of the wanted stages to run: from the first incomplete one on (all if force)."""
    runs = latest_runs(store) if store.path.exists() else {}
    reasons = {
        s: ("forced" if force else explain_incomplete(store, s, runs, settings)) for s in wanted
    }
    first = next((i for i, s in enumerate(wanted) if reasons[s] is not None), len(wanted))
    return wanted[first:], reasons


def _offered_parameters(
    store: str,
    config: str | None,
    profile: str | None,
    limit: int | None,
    seed: int | None,
    teachers: list[str] | None,
    task_runner: RunnerChoice,
) -> dict[str, Any]:
    return {
        "store": store,
        "config": config,
        "profile": profile,
        "limit": limit,
        "seed": seed,
        "teachers": teachers,
        "task_runner": task_runner,
    }


def _run_of(store: Store, stage: str, flow_run_id: str | None) -> Run | None:
    runs = [r for r in store.select(Run) if normalize_stage(r.stage) == stage]
    mine = [r for r in runs if flow_run_id and r.prefect_flow_run_id == flow_run_id]
    pool = mine or runs
    return max(pool, key=lambda r: r.started_at) if pool else None


async def run_stage(stage_flow: Any, kwargs: dict[str, Any], runner: Any) -> Any:
    """Call a stage flow as a subflow on the chosen runner; returns its final Prefect state."""
    call = stage_flow.with_options(task_runner=runner)
    state = call(**kwargs, return_state=True)
    return await state if inspect.isawaitable(state) else state


async def run_stage_outcome(
    store: Store, name: str, kwargs: dict[str, Any], choice: RunnerChoice, reason: str | None
) -> StageOutcome:
    """Run one stage's flow as a subflow and say how it went (with its run's summary)."""
    state = await run_stage(stage_def(name).flow, kwargs, runner_from_choice(choice))
    run = _run_of(store, name, str(state.state_details.flow_run_id))
    run_id = run.run_id if run else None
    if state.is_completed():
        summary = run.summary if run else {}
        return StageOutcome(
            stage=name,
            outcome="ran",
            reason=reason,
            state=state.name,
            message=state.message or None,
            run_id=run_id,
            summary=summary,
        )
    failure = state.message or state.type.value
    return StageOutcome(stage=name, outcome="failed", reason=failure, run_id=run_id)


def publish_pipeline_artifacts(store: Store, report: PipelineReport) -> None:
    """A table of the stages (outcome, planned / done / failed / retryable, wall time, cost)
    and one of per-server throughput over the stages that ran."""
    rows: list[dict[str, Any]] = []
    stages: list[dict[str, Any]] = []
    for outcome in report.outcomes:
        status = read_run_status(store, outcome.run_id) if outcome.run_id else None
        figures = stage_row(status).model_dump(exclude={"stage", "run_id"}) if status else {}
        said = outcome.model_dump(mode="json", exclude={"summary"})
        # the figures first: the UI's table is wide, and the message and run id can wait
        stages.append(
            {"stage": said.pop("stage"), "outcome": said.pop("outcome"), **figures, **said}
        )
        if status is not None:
            rows += [{"stage": outcome.stage, **row} for row in server_table(status)]
    publish_table(
        stages,
        artifact_key("pipeline", "stages"),
        "What each stage did in this pipeline run: planned / done / failed / retryable items, "
        "wall time (s) and model cost (USD).",
    )
    publish_table(
        rows,
        artifact_key("pipeline", "servers"),
        "Per-server throughput of every stage this pipeline run ran.",
    )


def dry_run_report(
    store: Store,
    settings: Settings,
    wanted: list[str],
    to_run: list[str],
    kwargs_of: Callable[[str], dict[str, Any]],
) -> PipelineReport:
    """The pipeline's dry run: the estimate of the stages that would run, as the report and a
    table artifact; no stage runs, no model is asked, nothing is written."""
    estimate = estimate_run(store, settings, to_run, {s: kwargs_of(s) for s in to_run})
    publish_table(
        estimate_table(estimate),
        artifact_key("pipeline", "estimate"),
        "What the stages that would run will cost (dry run; `toucan estimate`). Unpriced: "
        + (", ".join(estimate.unpriced) or "none"),
    )
    outcomes = [
        StageOutcome(stage=s, outcome="estimated" if s in to_run else "skipped_complete")
        for s in wanted
    ]
    return PipelineReport(store=str(store.path), outcomes=outcomes, estimate=estimate)


@flow(name="pipeline", log_prints=False, validate_parameters=True)
@documented("pipeline")
async def pipeline(
    stages: list[StageName] | None = None,
    store: str | None = None,
    config: str | None = None,
    profile: str | None = None,
    limit: int | None = None,
    limits: dict[StageName, int] | None = None,
    teachers: list[str] | None = None,
    seed: int | None = None,
    task_runner: RunnerChoice | None = None,
    stage_params: dict[StageName, dict[str, Any]] | None = None,
    force: bool = False,
    dry_run: bool = False,
) -> Any:
    """Run the stages in order, skipping complete ones; `stages` narrows the list,
    `stage_params` passes a stage its own parameters (e.g. onboard: {catalogs: [...]});
    `dry_run` runs nothing and sends no model call: it publishes what the stages that would run
    will cost (items, tokens, dollars, time; `toucan estimate`) as an artifact.
    Returns a PipelineReport, in a named Completed state when a stage left error rows or
    produced nothing."""
    store_path = str(resolve_store_path(store))
    handle = Store(store_path)
    chosen = {stage_def(s).name for s in (stages or STAGE_NAMES)}
    wanted = [s for s in STAGE_NAMES if s in chosen]  # pipeline order, whatever the order given
    choice = task_runner or RunnerChoice()
    outcomes: list[StageOutcome] = []
    settings = load_settings(config, profile=profile)
    to_run, reasons = plan_stages(handle, wanted, force, settings)
    stage_params = stage_params or {}

    def kwargs_of(stage: str) -> dict[str, Any]:
        offered = _offered_parameters(
            store_path, config, profile, (limits or {}).get(stage, limit), seed, teachers, choice
        )
        return {**stage_kwargs(stage_def(stage).flow, offered), **stage_params.get(stage, {})}

    if dry_run:
        return dry_run_report(handle, settings, wanted, to_run, kwargs_of)
    for stage in wanted:
        if stage not in to_run:
            outcomes.append(StageOutcome(stage=stage, outcome="skipped_complete"))
            continue
        if any(o.outcome == "failed" for o in outcomes):
            outcomes.append(StageOutcome(stage=stage, outcome="not_reached"))
            continue
        outcomes.append(
            await run_stage_outcome(handle, stage, kwargs_of(stage), choice, reasons[stage])
        )
    report = PipelineReport(store=store_path, outcomes=outcomes)
    publish_pipeline_artifacts(handle, report)
    if report.failed:
        failed = report.failed[0]
        raise StageFailed(f"stage {failed.stage} failed: {failed.reason}")
    return outcome_state(combine_outcomes(report.run_outcomes()), report)
