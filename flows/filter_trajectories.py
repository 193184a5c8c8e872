"""Stage 5: rate every trajectory that has no final rating yet (rules + judge), keep by the
configured rule."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from flows.queries import select_unrated_trajectories, trajectory_scopes
from flows.runner import RunContext, StageJob, StagePlan, StageSummary, llm_lane, plan_llm_batches
from tasks.filter_trajectories import (
    DIMENSIONS,
    JUDGE_GROUP,
    STAGE,
    RatingItem,
    filter_trajectories_batch,
)
from tasks.llm_batch import BatchOutput


class KeepTally(BaseModel):
    rated: int = 0
    kept: int = 0
    errors: int = 0
    keep_rate: float = Field(0.0, description="kept / rated, 4 places")

    @classmethod
    def of(cls, cells: dict[str, int]) -> KeepTally:
        rated = cells.get("rated", 0)
        kept = cells.get("kept", 0)
        rate = round(kept / rated, 4) if rated else 0.0
        return cls(rated=rated, kept=kept, errors=cells.get("errors", 0), keep_rate=rate)


class FilterTrajectoriesSummary(StageSummary):
    candidates: int = Field(0, description="trajectories, rated before or in this run")
    already_rated: int = 0
    total: KeepTally = Field(default_factory=KeepTally)
    per_teacher: dict[str, KeepTally] = Field(default_factory=dict)
    per_server: dict[str, KeepTally] = Field(default_factory=dict)
    flags_fired: dict[str, int] = Field(default_factory=dict)
    leaks_by_kind: dict[str, int] = Field(default_factory=dict)  # kind -> trajectories
    by_reason: dict[str, int] = Field(default_factory=dict)
    mean_scores: dict[str, float] = Field(default_factory=dict)
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0


class FilterTrajectoriesJob(StageJob[list[RatingItem]]):
    """Rates the unrated trajectories, in lanes of judge calls."""

    name = STAGE
    batch_fn = filter_trajectories_batch
    needs_model = item_progress = True

    def plan(self, ctx: RunContext) -> StagePlan[list[RatingItem]]:
        judges = [d.name for d in self.settings.models.group(JUDGE_GROUP)]
        tries = self.settings.retries.max_attempts
        todo, already = select_unrated_trajectories(ctx.store, judges, self.params.limit, tries)
        self.scopes: dict[str, list[tuple[str, str]]] = {}  # of the batches in flight
        concurrency = min(
            self.settings.filter_trajectories.concurrency, self.settings.max_in_flight
        )
        return plan_llm_batches(todo, concurrency, already)

    def batch_kwargs(self, ctx: RunContext) -> dict[str, Any]:
        return {"lane": llm_lane(ctx), "section": self.settings.filter_trajectories}

    def batch_args(self, batch: list[RatingItem]) -> dict[str, Any]:
        # what `write` counts each rating by, kept while its batch is in flight: no write
        # reads the rated trajectories back from the store
        self.scopes.update(
            (i.trajectory.trajectory_id, trajectory_scopes(i.trajectory)) for i in batch
        )
        return {}

    def write(self, ctx: RunContext, output: BatchOutput) -> None:
        super().write(ctx, output)
        tally = ctx.tally
        for rating in output.records:
            cells = {"rated": 1, "kept": int(rating.keep), "errors": int(rating.status == "error")}
            for table, key in self.scopes.pop(rating.trajectory_id):
                tally.add_cells(table, key, cells)
            for flag in (name for name, fired in rating.flags.items() if fired):
                tally.add("flags", flag)
            for kind in rating.leaks:
                tally.add("leaks", kind)
            for name, score in rating.scores.items():
                tally.sample("scores", name, score.score)

    def summarise(self, ctx: RunContext) -> BaseModel:
        tally = ctx.tally
        return FilterTrajectoriesSummary.of(
            ctx,
            total=KeepTally.of(tally.table("total").get("", {})),
            per_teacher={k: KeepTally.of(v) for k, v in tally.table("teacher").items()},
            per_server={k: KeepTally.of(v) for k, v in tally.table("server").items()},
            flags_fired=tally.counts("flags"),
            leaks_by_kind=tally.counts("leaks"),
            mean_scores=tally.means("scores", DIMENSIONS),
        )
