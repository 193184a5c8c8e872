"""The one runner every stage goes through: select → plan → fan out → write → progress → summary.

A stage module gives a `StageJob` (its plan, its batch function from tasks/, its write hook,
its summary); `stage_steps` does the rest the same way for every stage: the run row and
writer lock (`stage_run`), the embedded model around the fan-out when the stage calls models,
a progress counter, a `StageTally` fed by the write hook, and the summary stored on the run.
Two executors run the fan-out (flows/executors.py): Prefect tasks on the flow's task runner
(`run_stage_flow`, the body of every stage's @flow) or plain asyncio on the caller's loop
(`run_stage_async`, for benchmarks and embedding). There is no second copy of any stage.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel

from flows.durable import durable_replies
from flows.executors import AsyncioExecutor, FanOut, PrefectExecutor
from flows.live_progress import live_progress
from flows.outcome import RunOutcome, judge_run, outcome_state
from flows.run_context import (
    RunContext,
    StagePlan,
    StageTally,
    Stream,
    reading_run,
    stage_run,
)
from flows.spend import ModelGuards, RunSpend
from flows.stage_log import log_outcome, log_plan, run_logger
from flows.writes import write_output
from tasks.llm_batch import (
    PARALLEL_BATCHES,
    LlmLane,
    ProgressCounter,
    batch_size,
    chunked,
    in_flight_per_batch,
)
from toucan.config import Settings, load_settings
from toucan.llm.batch_items import use_batch
from toucan.llm.batch_ledger import BatchLedger
from toucan.llm.cache import LlmCache
from toucan.progress import report_progress
from toucan.store import Store

if TYPE_CHECKING:
    from flows.registry import StageDef

__all__ = [
    "RunContext",
    "StagePlan",
    "StageTally",
    "Stream",
]  # what a stage module needs, from here

BatchT = TypeVar("BatchT")
T = TypeVar("T")


class StageSummary(BaseModel):
    """The start of every stage's summary. `of` fills the fields each stage counts the same
    way (the run, the candidates, the items done by earlier runs, counts by status and
    reason, the model spend and whether the guards stopped the run: flows/spend.py) from the
    run's plan, counters and guards; the stage passes the rest."""

    run_id: str
    spent_usd: float = 0.0
    spent_by_model: dict[str, float] = {}
    stopped: str | None = None
    not_started: int = 0

    @classmethod
    def of(cls, ctx: RunContext, **fields: Any) -> Any:
        plan, tally = ctx.plan, ctx.tally
        standard = {
            "run_id": ctx.run_id,
            "candidates": plan.planned + plan.already_done,
            "already_done": plan.already_done,
            "already_rated": plan.already_done,
            "by_status": tally.counts("status"),
            "by_reason": tally.counts("reason"),
            **(spend := ctx.guards.report() if ctx.guards else RunSpend()).model_dump(),
            "cost_usd": spend.spent_usd,  # the filter stages' older name of spent_usd
        }
        shared = {name: value for name, value in standard.items() if name in cls.model_fields}
        return cls(**{**shared, **fields})


class StageJob(ABC, Generic[BatchT]):
    """What a stage module provides: subclass once per stage (no deeper), set the class
    attributes, implement `plan` and `summarise`, override the other hooks where needed.

    `self.params` holds the stage's own parameters: those of its flow (flows/registry.py)
    besides store, config and profile, with the flow's defaults; the run row records them.
    `batch_fn` is a plain function of tasks/<stage>.py: called as `batch_fn(batch,
    **batch_kwargs(ctx), **batch_args(batch))`, sync or async, it returns what `write`
    stores and never touches the store.
    """

    name: ClassVar[str]
    batch_fn: ClassVar[Callable[..., Any]]
    # calls models: the embedded model runs around the fan-out, and the run's guards
    # (flows/spend.py) are shared by its routers
    needs_model: ClassVar[bool] = False
    item_progress: ClassVar[bool] = False  # the batch reports progress per item itself
    records_run: ClassVar[bool] = True  # False: read-only, no run row, no writer lock

    def __init__(self, settings: Settings, params: dict[str, Any]) -> None:
        self.settings = settings
        self.params = SimpleNamespace(**params)

    def run_params(self) -> dict[str, Any]:
        """The parameters the run row records."""
        return dict(vars(self.params))

    @abstractmethod
    def plan(self, ctx: RunContext) -> StagePlan[BatchT]:
        """The run's work: items planned, items earlier runs did, the batches."""

    def batch_kwargs(self, ctx: RunContext) -> dict[str, Any]:
        """Arguments every batch of this run shares (`ctx.plan` is set, the model is up)."""
        return {}

    def batch_args(self, batch: BatchT) -> dict[str, Any]:
        """Arguments of one batch, read when it is submitted (after earlier batches wrote)."""
        return {}

    def write(self, ctx: RunContext, output: Any) -> None:
        """Store one batch's output and count it (default: a BatchOutput of status rows)."""
        write_output(ctx, output)
        for record in output.records:
            ctx.tally.item(record.status, record.reason)

    def batch_failed(self, batch: BatchT, error: Exception) -> Any:
        """The output standing in for a batch that raised; by default the run fails."""
        raise error

    @abstractmethod
    def summarise(self, ctx: RunContext) -> BaseModel:
        """The stage's summary record, from the run's plan and counters."""

    def run_summary(self, summary: BaseModel) -> dict[str, Any]:
        """What the run row keeps of the summary."""
        return summary.model_dump(mode="json")


def plan_llm_batches(
    items: Sequence[T] | Stream[T], concurrency: int, already_done: int
) -> StagePlan[list[T]]:
    """Items split evenly over PARALLEL_BATCHES lanes holding `concurrency` items in flight;
    a Stream of items gives a Stream of batches, each made when a lane is free."""
    size = batch_size(len(items))
    batches: list[list[T]] | Stream[list[T]]
    batches = items.batched(size) if isinstance(items, Stream) else list(chunked(items, size))
    per_batch = in_flight_per_batch(len(batches), concurrency)
    largest = min(size, len(items))
    return StagePlan(len(items), already_done, batches, PARALLEL_BATCHES, per_batch, largest)


def llm_lane(ctx: RunContext) -> LlmLane:
    """The lane of an LLM stage's batches: limits shared by the batches running at once, the
    run's reply cache (each reply stored as it comes when the runner set up `ctx.replies`),
    the embedded model's url and the progress counter."""
    cache = ctx.replies.cache() if ctx.replies is not None else LlmCache.load(ctx.store, ctx.run_id)
    return LlmLane(
        models=ctx.settings.models.shared_by(ctx.plan.running),
        run_id=ctx.run_id,
        concurrency=ctx.plan.per_batch,
        local_base_url=ctx.local_base_url,
        cache=cache,
        progress=ctx.progress,
        budget=ctx.guards.budget if ctx.guards else None,
        breaker=ctx.guards.breaker if ctx.guards else None,
        batch_ledger=BatchLedger(ctx.store) if ctx.batch_jobs else None,
    )


def sends_batch_jobs(settings: Settings, stage: str, items: int) -> bool:
    """Whether this run of `stage` sends its model requests as provider batch jobs, decided
    once per run and logged: its mode is `batch`, or `auto` with more than `batch_min_items`
    items (toucan/config.py StageMode), and a configured deployment has a batch API. A
    request whose own deployment has none still goes online (toucan/llm/batch_gate.py)."""
    mode = settings.stage_mode(stage)
    if mode is None or mode[0] == "online" or not items:
        return False
    from toucan.llm.batch_api import has_batch_api  # LiteLLM's provider map: batch modes only

    local = settings.models.route_to_local
    with_api = sorted({d.name for d in settings.models.all() if has_batch_api(d, local)})
    if not with_api:
        run_logger().warning(
            "%s: mode %s, but no configured deployment has a batch API (supports_batch, "
            "OpenAI or Anthropic): the %d items go online",
            stage,
            mode[0],
            items,
        )
        return False
    chosen = use_batch(mode[0], items, mode[1])
    run_logger().info(
        "%s: mode %s, %d items (batch_min_items %d): %s",
        stage,
        mode[0],
        items,
        mode[1],
        f"provider batch jobs on {', '.join(with_api)}" if chosen else "online",
    )
    return chosen


def plan_for_batch_jobs(plan: StagePlan[Any]) -> StagePlan[Any]:
    """Every batch at once, every item of a batch in flight: the items only wait at the gate
    for their batch's job, and no batch's job should wait for another's to end."""
    per_batch = plan.largest_batch or max((len(batch) for batch in plan.batches), default=1)
    return dataclasses.replace(plan, parallel=max(1, len(plan.batches)), per_batch=per_batch)


@contextlib.contextmanager
def model_endpoint(settings: Settings, needed: bool = True) -> Iterator[str | None]:
    """The embedded model server's base url for profile `local` (started and stopped here),
    else None: the deployments' own providers are used."""
    if not needed or not settings.models.route_to_local:
        yield None
        return
    from toucan.llm.local_server import LocalModelServer

    with LocalModelServer(settings.models.local) as server:
        yield server.base_url


@dataclass
class StageSteps:
    """One run of one stage, as the executors see it: the fan-out to run (None when there is
    nothing to do) and, once the block has ended, the summary and the outcome."""

    fan_out: FanOut | None = None
    summary: Any = None
    outcome: RunOutcome | None = None


@contextlib.contextmanager
def stage_steps(job: StageJob[Any], store: Store) -> Iterator[StageSteps]:
    """Check the settings, open the run, plan, yield the fan-out for an executor, then
    summarise and record. ConfigError when the settings name an unknown stage or cap spend
    on an unpriced deployment; ModelGroupDown / BudgetExhausted, once the summary is
    recorded, when the run's model guards stopped it (flows/spend.py)."""
    from flows.registry import check_settings, stage  # the registry imports every stage module

    check_settings(job.settings)
    guards = ModelGuards.open(job.settings, job.name) if job.needs_model else None
    opener = stage_run if job.records_run else reading_run
    with opener(store, job.settings, job.name, job.run_params()) as ctx:
        ctx.guards = guards
        plan = ctx.plan = job.plan(ctx)
        if job.needs_model and sends_batch_jobs(job.settings, job.name, plan.planned):
            ctx.batch_jobs = True
            plan = ctx.plan = plan_for_batch_jobs(plan)
        log_plan(ctx)
        steps = StageSteps()
        progress = ctx.progress = ProgressCounter(job.name, plan.planned, ctx.tally.finished)
        report_progress(job.name, ctx.tally.finished, plan.planned)

        def write(output: Any) -> None:
            job.write(ctx, output)
            if guards is not None:
                guards.absorb(getattr(output, "events", ()))
            if not job.item_progress:
                report_progress(job.name, ctx.tally.finished, plan.planned, failed=ctx.tally.failed)
            else:  # items a worker process counted on its copy of the counter
                progress.catch_up(ctx.tally.finished, ctx.tally.failed)

        with (
            live_progress(ctx, enabled=job.records_run),
            model_endpoint(job.settings, job.needs_model and bool(plan.batches)) as base_url,
            durable_replies(ctx.store, ctx.run_id) as ctx.replies,
        ):
            if plan.batches:
                ctx.local_base_url = base_url
                shared = job.batch_kwargs(ctx)
                steps.fan_out = FanOut(
                    stage=job.name,
                    batch_fn=type(job).batch_fn,
                    batches=plan.batches,
                    parallel=plan.parallel,
                    kwargs_for=lambda batch: {**shared, **job.batch_args(batch)},
                    write=write,
                    on_error=job.batch_failed,
                )
                if guards is not None:
                    steps.fan_out.stopped, steps.fan_out.skip = guards.tripped, guards.skip
            yield steps
        steps.summary = job.summarise(ctx)
        steps.outcome = judge_run(ctx)
        ctx.summary = {**job.run_summary(steps.summary), "outcome": steps.outcome.model_dump()}
        log_outcome(ctx, ctx.summary, stage(job.name).writes)
        if guards is not None:
            guards.raise_if_stopped(ctx.tally.finished, ctx.tally.failed)


def run_stage_flow(
    job_class: type[StageJob[Any]],
    *,
    store: str | None,
    config: str | None,
    profile: str | None,
    **params: Any,
) -> Any:
    """The body of every stage's @flow: settings, store, then the stage's batches as Prefect
    tasks on the flow's task runner. Returns the stage's summary, in a named Completed state
    when items errored or nothing came out (flows/outcome.py)."""
    settings = load_settings(config, profile=profile)
    job = job_class(settings, params)
    with stage_steps(job, Store(store or settings.store)) as steps:
        if steps.fan_out is not None:
            PrefectExecutor().run(steps.fan_out)
    return outcome_state(steps.outcome or RunOutcome(), steps.summary)


async def run_stage_async(
    stage: StageDef | str, settings: Settings, store: Store, **params: Any
) -> Any:
    """The same stage without Prefect: its batches as asyncio tasks on the caller's loop.
    `params` are the stage's flow parameters (TypeError for one the flow does not take); the
    flow's defaults fill the others."""
    if isinstance(stage, str):
        from flows.registry import stage as find_stage  # the registry imports every stage

        stage = find_stage(stage)
    bound = inspect.signature(stage.flow.fn).bind_partial(**params)
    bound.apply_defaults()
    where = ("store", "config", "profile")
    job = stage.job(settings, {k: v for k, v in bound.arguments.items() if k not in where})
    with stage_steps(job, store) as steps:
        if steps.fan_out is not None:
            await AsyncioExecutor().run(steps.fan_out)
    return steps.summary
