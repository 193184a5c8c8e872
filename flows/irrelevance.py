"""Extension 1 flow: pair kept tasks with servers that cannot solve them (new `irrelevant`
Task rows); the trajectories stage then runs them like any task.

`irrelevance_flow` fans batches out as Prefect tasks; `run_irrelevance` is the same stage
without Prefect. Re-running adds nothing: the pair ids are deterministic in (seed, task).
"""

from __future__ import annotations

from collections import Counter

from prefect import flow
from pydantic import BaseModel, Field

from flows.kept import select_kept_original_tasks
from tasks.irrelevance import STAGE, irrelevant_task_id, pair_tasks, pair_tasks_batch
from toucan.config import Settings, load_settings
from toucan.records import Server, Task
from toucan.runs import RunContext, stage_run
from toucan.store import Store

BATCH_TASKS = 500


class IrrelevanceSummary(BaseModel):
    run_id: str
    kept_tasks: int = 0
    already_done: int = 0
    created: int = 0
    by_status: dict[str, int] = Field(default_factory=dict)
    by_reason: dict[str, int] = Field(default_factory=dict)


def select_todo(store: Store) -> list[Task]:
    kept = select_kept_original_tasks(store)
    done = store.existing_ids(Task, [irrelevant_task_id(t.task_id, 0) for t in kept])
    return [t for t in kept if irrelevant_task_id(t.task_id, 0) not in done]


def count_pending(store: Store) -> int:
    """Kept tasks without their irrelevant pair yet (the pipeline's completeness check)."""
    return len(select_todo(store)) if store.path.exists() else 0


def record_rows(ctx: RunContext, rows: list[Task], summary: IrrelevanceSummary) -> None:
    summary.created += ctx.write(rows)  # type: ignore[arg-type]
    for row in rows:
        ctx.events.record(
            item_id=row.task_id,
            server=",".join(row.server_ids) or None,
            status=row.status,
            error_class=row.reason,
        )
    ctx.flush_events()
    by_status = Counter(summary.by_status) + Counter(r.status for r in rows)
    by_reason = Counter(summary.by_reason) + Counter(r.reason for r in rows if r.reason)
    summary.by_status, summary.by_reason = dict(by_status), dict(by_reason)


def start(ctx: RunContext) -> tuple[list[Task], dict[str, Server], IrrelevanceSummary]:
    kept_count = len(select_kept_original_tasks(ctx.store))
    todo = select_todo(ctx.store)
    servers = {s.server_id: s for s in ctx.store.select(Server)}
    summary = IrrelevanceSummary(
        run_id=ctx.run_id, kept_tasks=kept_count, already_done=kept_count - len(todo)
    )
    return todo, servers, summary


@flow(name="irrelevance", log_prints=False, persist_result=False, validate_parameters=False)
def irrelevance_flow(
    store: str | None = None,
    config: str | None = None,
    profile: str | None = None,
    seed: int | None = None,
) -> IrrelevanceSummary:
    settings = load_settings(config, profile=profile)
    return run_irrelevance_stage(Store(store or settings.store), settings, seed, use_prefect=True)


def run_irrelevance_stage(
    store: Store, settings: Settings, seed: int | None = None, *, use_prefect: bool = False
) -> IrrelevanceSummary:
    """The stage body; Prefect tasks when `use_prefect`, plain calls otherwise."""
    chosen_seed = settings.synthesize.seed if seed is None else seed
    per_task = settings.extensions.irrelevance_per_task
    with stage_run(store, settings, STAGE, {"seed": chosen_seed, "per_task": per_task}) as ctx:
        todo, servers, summary = start(ctx)
        chunks = [todo[i : i + BATCH_TASKS] for i in range(0, len(todo), BATCH_TASKS)]
        if use_prefect:
            futures = [
                pair_tasks_batch.submit(chunk, servers, per_task, chosen_seed, ctx.run_id)
                for chunk in chunks
            ]
            for future in futures:
                record_rows(ctx, future.result(), summary)
        else:
            for chunk in chunks:
                rows = pair_tasks(chunk, servers, per_task, chosen_seed)
                record_rows(
                    ctx, [r.model_copy(update={"run_id": ctx.run_id}) for r in rows], summary
                )
        ctx.summary = summary.model_dump(mode="json")
        return summary


def run_irrelevance(
    store: Store, settings: Settings, seed: int | None = None
) -> IrrelevanceSummary:
    """Extension 1 without Prefect."""
    return run_irrelevance_stage(store, settings, seed)
