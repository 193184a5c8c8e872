"""How a stage run ended, in one state an operator can act on.

A run whose items all finished ends `Completed`. Otherwise the flow run ends in a named
Completed state the Prefect UI shows by name, with a message that says what to do next:

- `CompletedWithErrors`: items ended as error rows. The message counts them:
  `items_errored: N (retryable R; final F; given up G)`, then the reasons. Retryable ones
  (toucan.errors.RETRYABLE_REASONS) are tried again by the next run of the stage, and the
  pipeline re-runs a stage that has them; `given up` ones were tried `retries.max_attempts`
  times; final ones (a rejected request, an unparseable reply) are answers.
- `NothingProduced`: the run planned items and none came out ok (every server rejected at
  onboarding, every task rejected): `nothing_produced: 0 of N planned ok`, then the reasons.

A named Completed state keeps the flow's return value (the stage summary) for callers, the CLI
and the pipeline, where a Failed state would raise; the pipeline sums its stages' outcomes
into its own state the same way. The outcome is also kept on the run row
(`summary["outcome"]`), where `toucan status` and the completeness check read it.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field

from flows.queries import RETRYABLE_ERROR
from toucan.store import Store

if TYPE_CHECKING:
    from flows.run_context import RunContext

logger = logging.getLogger(__name__)

StateName = Literal["Completed", "CompletedWithErrors", "NothingProduced"]
COMPLETED: StateName = "Completed"
WITH_ERRORS: StateName = "CompletedWithErrors"
NOTHING_PRODUCED: StateName = "NothingProduced"
# the tables whose rows are items a later run may retry (each has status, reason, attempts)
ITEM_TABLES = ("tasks", "task_ratings", "trajectories", "trajectory_ratings")
PRODUCED_STATUSES = ("ok", "specs_only")  # a row a later stage (or a trainer) can use


class ErrorCounts(BaseModel):
    """The error rows a run wrote, by what happens to them next."""

    errored: int = 0
    retryable: int = 0  # the next run tries them again
    final: int = 0  # reasons that are answers
    given_up: int = 0  # retryable, but tried `retries.max_attempts` times
    by_reason: dict[str, int] = Field(default_factory=dict)


class RunOutcome(BaseModel):
    """What the run's Prefect state says (`state`, `message`) and the counts behind it."""

    state: StateName = COMPLETED
    message: str = ""
    planned: int = 0
    produced: int = 0
    errors: ErrorCounts = Field(default_factory=ErrorCounts)

    @property
    def clean(self) -> bool:
        return self.state == COMPLETED


def count_run_errors(store: Store, run_id: str, max_attempts: int) -> ErrorCounts:
    """The error rows run `run_id` wrote in the item tables, split into retryable, final and
    given up (a retryable error on its `max_attempts`-th try)."""
    if not store.path.exists():
        return ErrorCounts()
    parts = " UNION ALL ".join(
        f"SELECT reason, ({RETRYABLE_ERROR}) AS retryable, coalesce(attempts, 1) AS attempts "
        f"FROM {table} WHERE run_id = ? AND status = 'error'"
        for table in ITEM_TABLES
    )
    rows = store.query(
        f"SELECT coalesce(reason, 'unknown'), retryable, attempts >= {int(max_attempts)}, "
        f"count(*) FROM ({parts}) GROUP BY ALL",
        [run_id] * len(ITEM_TABLES),
    )
    counts, reasons = ErrorCounts(), Counter[str]()
    for reason, retryable, spent, count in rows:
        reasons[reason] += count
        counts.errored += count
        if not retryable:
            counts.final += count
        elif spent:
            counts.given_up += count
        else:
            counts.retryable += count
    counts.by_reason = dict(reasons.most_common())
    return counts


def judge_outcome(
    planned: int, produced: int, errors: ErrorCounts, reasons: dict[str, int]
) -> RunOutcome:
    """The state of a run that planned `planned` items, of which `produced` came out usable,
    with these error rows; `reasons` are the run's counts by reason (errors and rejections),
    named when nothing was produced."""
    outcome = RunOutcome(planned=planned, produced=produced, errors=errors)
    nothing = planned > 0 and produced == 0
    if errors.errored:
        outcome.state = WITH_ERRORS
        outcome.message = (
            f"items_errored: {errors.errored} (retryable {errors.retryable}; "
            f"final {errors.final}; given up {errors.given_up}); "
            f"reasons: {format_counts(errors.by_reason)}"
        )
        if errors.retryable:
            outcome.message += "; run the stage (or the pipeline) again to retry"
        if nothing:
            outcome.message += f"; nothing_produced: 0 of {planned} planned ok"
    elif nothing:
        outcome.state = NOTHING_PRODUCED
        outcome.message = (
            f"nothing_produced: 0 of {planned} planned ok; reasons: {format_counts(reasons)}"
        )
    return outcome


def format_counts(counts: dict[str, int]) -> str:
    """`a 3, b 1`, largest first; `none` for no counts."""
    ordered = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return ", ".join(f"{key} {count}" for key, count in ordered) or "none"


def judge_run(ctx: RunContext) -> RunOutcome:
    """The outcome of the run `ctx` holds, from its plan, its counters and its error rows."""
    statuses = ctx.tally.counts("status")
    produced = sum(statuses.get(status, 0) for status in PRODUCED_STATUSES)
    errors = count_run_errors(ctx.store, ctx.run_id, ctx.settings.retries.max_attempts)
    return judge_outcome(ctx.plan.planned, produced, errors, ctx.tally.counts("reason"))


def combine_outcomes(stages: dict[str, RunOutcome]) -> RunOutcome:
    """The pipeline's outcome from those of its stage runs (stage name -> outcome): errors
    summed, and the message naming each stage that was not clean, with its own message."""
    total = ErrorCounts()
    reasons: Counter[str] = Counter()
    for outcome in stages.values():
        for name in ("errored", "retryable", "final", "given_up"):
            setattr(total, name, getattr(total, name) + getattr(outcome.errors, name))
        reasons.update(outcome.errors.by_reason)
    total.by_reason = dict(reasons.most_common())
    unclean = {name: o for name, o in stages.items() if not o.clean}
    combined = RunOutcome(
        planned=sum(o.planned for o in stages.values()),
        produced=sum(o.produced for o in stages.values()),
        errors=total,
    )
    if not unclean:
        return combined
    combined.state = WITH_ERRORS if total.errored else NOTHING_PRODUCED
    details = "; ".join(f"{name}: {o.message}" for name, o in unclean.items())
    if total.errored:
        combined.message = (
            f"items_errored: {total.errored} (retryable {total.retryable}; "
            f"final {total.final}; given up {total.given_up}) in {', '.join(unclean)}. {details}"
        )
    else:
        combined.message = f"nothing_produced in {', '.join(unclean)}. {details}"
    return combined


def outcome_state(outcome: RunOutcome, result: Any) -> Any:
    """What the flow returns: `result` itself when the run is clean (Prefect makes it a plain
    Completed state), else a Completed state named after the outcome, carrying `result`."""
    if outcome.clean:
        return result
    from prefect.states import Completed

    log_outcome(outcome)
    return Completed(name=outcome.state, message=outcome.message, data=result)


def log_outcome(outcome: RunOutcome) -> None:
    """One warning line in the flow run's log (the UI shows it), or in ours outside Prefect."""
    try:
        from prefect.logging import get_run_logger

        run_logger: Any = get_run_logger()
    except Exception:  # outside a flow run there is no run logger
        run_logger = logger
    run_logger.warning("%s: %s", outcome.state, outcome.message)
