"""A stage run's model guards: one ModelBreaker and one Budget, shared by every router it makes.

The runner (flows/runner.py) opens `ModelGuards` once per run of a stage that calls models,
in the flow process, before the run row: a cap with an unpriced deployment refuses to start
there (`unpriced_deployment`, unless `budget.allow_unpriced`). The lane of the LLM stages
(`flows.runner.llm_lane`) and the options of the agent stages (`flows.trajectories.
agent_options`: trajectories and multi-turn) hand the same breaker and budget to every router
their batches build, so a deployment paused in one batch is paused in all, and every call of
the run reserves against one ledger.

Where the batches run:
- Prefect's thread pool (the default) and plain asyncio: the batches share the objects
  themselves; the breaker and the budget are thread-safe.
- Dask or Ray worker processes: each batch gets a pickled copy, as it stood when the batch
  was submitted. A cap then holds inside each batch against the spend known at its start, and
  the flow process learns what a batch spent and paused from the `llm_call` events it returns
  (`absorb`), so the next batch starts from there and no batch is submitted once a guard
  tripped. Batches running at the same time on different workers do not see each other's
  spend: the overshoot is at most one cap's worth per batch in flight.

When a guard trips (every deployment of a model group paused or out of its own cap, or the
run's or the stage's cap reached) the runner submits no new batch and lets those in flight
finish: their items not yet started fail at once, unsent, as `model_unavailable` /
`budget_exhausted` rows (retryable); the items of batches never submitted have no row and are
counted as `not_started`. Finished rows are kept. Once the summary is stored, the stage
raises `ModelGroupDown` or `BudgetExhausted` with what was spent and how to continue, and the
run ends `failed`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sized
from dataclasses import dataclass

from pydantic import BaseModel, Field

from toucan.config import Settings
from toucan.errors import BudgetExhausted, ModelGroupDown
from toucan.llm.breaker import DeploymentPaused, ModelBreaker
from toucan.llm.budget import Budget, check_budget_prices
from toucan.llm.router import GROUPS
from toucan.records import Event

DETAIL_CHARS = 160  # of the last failure quoted in the stop message: its start says enough


class RunSpend(BaseModel):
    """The model spend of one stage run and whether its guards stopped it; every stage
    summary carries these fields (`StageSummary.of`). Dollars; cached replies cost nothing."""

    spent_usd: float = 0.0
    spent_by_model: dict[str, float] = Field(default_factory=dict)  # deployment -> $
    # prompt / completion tokens of the run's model calls as the providers counted them (a
    # cached reply: 0), from the written batches' `llm_call` events: counters, so a summary
    # never scans the events table (at 1M items that scan held 280 MB of DuckDB's buffers)
    tokens_in: int = 0
    tokens_out: int = 0
    stopped: str | None = None  # budget_exhausted | model_unavailable; None: ran to the end
    not_started: int = 0  # items of batches never submitted once the guards tripped


@dataclass(frozen=True)
class GuardStop:
    """Why the guards stopped a run: a reason token, what tripped, and how to continue."""

    reason: str
    detail: str
    advice: str


class ModelGuards:
    """The breaker and budget of one stage run, and what its written batches spent."""

    def __init__(self, settings: Settings, stage: str) -> None:
        """`budget` is None without a cap: then no call pays for counting its tokens."""
        self.stage = stage
        self.breaker = ModelBreaker(settings.models.circuit_breaker_failures)
        self.budget = Budget(settings.budget) if settings.budget.capped else None
        self.groups = {group: [d.name for d in settings.models.group(group)] for group in GROUPS}
        self.paid: Counter[str] = Counter()  # deployment -> $ of the written llm_call events
        self.tokens_in = self.tokens_out = 0  # tokens of those events
        self.not_started = 0

    @classmethod
    def open(cls, settings: Settings, stage: str) -> ModelGuards:
        """The guards of a new run. ConfigError `unpriced_deployment` when a cap is set and a
        configured deployment has no known price (toucan/llm/budget.py)."""
        check_budget_prices(settings.budget, settings.models)
        return cls(settings, stage)

    def absorb(self, events: Iterable[Event]) -> None:
        """Count a written batch's model calls: what they cost, the caps that refused them and
        the deployments they found paused (the only news of a batch that ran on a copy of the
        guards in another process)."""
        for event in events:
            if event.kind != "llm_call":
                continue
            self.tokens_in += event.tokens_in
            self.tokens_out += event.tokens_out
            if not event.model:
                continue
            if event.status == "ok":
                self.paid[event.model] += event.cost_usd
                if self.budget is not None:
                    self.budget.absorb(event.stage, event.model, event.cost_usd)
            elif event.error_class == BudgetExhausted.reason and self.budget is not None:
                self.budget.note_refusal(event.stage, event.model, event.error or "")
            elif event.error_class == ModelGroupDown.reason:
                reason, detail = ModelGroupDown.reason, event.error or ""
                self.breaker.pause(DeploymentPaused(event.model, reason, detail))

    def skip(self, batch: Sized) -> None:
        """A batch the runner did not submit because a guard tripped."""
        self.not_started += len(batch)

    def tripped(self) -> bool:
        return self.stop() is not None

    def stop(self) -> GuardStop | None:
        """Why no new batch may start, or None while the models may still answer."""
        budget = self.budget
        if budget is not None and (cap := budget.reached(self.stage)) is not None:
            advice = f"raise {cap.setting} and run the stage again to continue"
            return GuardStop(BudgetExhausted.reason, budget.describe(cap), advice)
        for group, names in self.groups.items():
            paused = {name: self.breaker.paused(name) for name in names}
            capped = {n: budget.reached(self.stage, n) if budget else None for n in names}
            if not names or not all(paused[n] or capped[n] for n in names):
                continue
            if budget is not None and all(capped.values()):
                detail = "; ".join(budget.describe(cap) for cap in capped.values() if cap)
                advice = "raise their budget.per_deployment caps and run the stage again"
                return GuardStop(BudgetExhausted.reason, detail, advice)
            last = next(p for p in paused.values() if p is not None)
            detail = (
                f"every deployment of model group {group!r} is paused ({', '.join(names)}; "
                f"{last.key}: {last.detail[:DETAIL_CHARS]})"
            )
            advice = "run the stage again once the provider answers"
            return GuardStop(ModelGroupDown.reason, detail, advice)
        return None

    def report(self) -> RunSpend:
        """Spend so far (the batches written) and how the guards ended the run."""
        stop = self.stop()
        return RunSpend(
            spent_usd=round(sum(self.paid.values()), 6),
            spent_by_model={name: round(usd, 6) for name, usd in sorted(self.paid.items())},
            tokens_in=self.tokens_in,
            tokens_out=self.tokens_out,
            stopped=stop.reason if stop else None,
            not_started=self.not_started,
        )

    def raise_if_stopped(self, finished: int, failed: int) -> None:
        """End a stopped run non-green: ModelGroupDown or BudgetExhausted, saying what tripped,
        what was spent, what is left and how to continue. `finished`/`failed`: rows written."""
        stop = self.stop()
        if stop is None:
            return
        spent = sum(self.paid.values())
        message = (
            f"{self.stage} stopped: {stop.detail}. ${spent:.4f} spent; {finished} rows written "
            f"({failed} errors: the retryable ones are redone next time), {self.not_started} "
            f"items not started; {stop.advice} (rows written are kept, paid replies come from "
            "the cache)"
        )
        if stop.reason == BudgetExhausted.reason:
            raise BudgetExhausted(message, scope="run")
        raise ModelGroupDown(message)
