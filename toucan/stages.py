"""The stage list, where each stage's flow lives, and when a stage counts as complete.

A stage is *complete* on a store when
1. its latest run there ended `completed`,
2. that run ended after the latest completed run of every stage before it (new upstream rows
   mean new work), and
3. it has no unfinished items: the flow module's own `count_pending(store) -> int` when it
   defines one, else the anti-join below for the stages whose work is a row-per-input
   (filter_tasks, trajectories, filter_trajectories).
The `pipeline` flow starts at the first stage that is not complete and runs every stage after.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from datetime import datetime
from typing import Any, Literal

from toucan.records import Run
from toucan.store import Store

StageName = Literal[
    "onboard",
    "synthesize",
    "filter_tasks",
    "trajectories",
    "filter_trajectories",
    "irrelevance",
    "diversify",
    "multi_turn",
    "export",
    "report",
]
STAGES: tuple[str, ...] = StageName.__args__  # type: ignore[attr-defined]

# Unfinished items per stage, as SQL over the store (the resume anti-join, counted).
PENDING_SQL: dict[str, tuple[str, tuple[str, ...]]] = {
    "filter_tasks": (
        "SELECT count(*) FROM tasks t WHERE t.status = 'ok' AND NOT EXISTS "
        "(SELECT 1 FROM task_ratings r WHERE r.task_id = t.task_id)",
        ("tasks", "task_ratings"),
    ),
    "trajectories": (
        "SELECT count(DISTINCT r.task_id) FROM task_ratings r WHERE r.keep AND NOT EXISTS "
        "(SELECT 1 FROM trajectories j WHERE j.task_id = r.task_id)",
        ("task_ratings", "trajectories"),
    ),
    "filter_trajectories": (
        "SELECT count(*) FROM trajectories j WHERE j.status = 'ok' AND NOT EXISTS "
        "(SELECT 1 FROM trajectory_ratings r WHERE r.trajectory_id = j.trajectory_id)",
        ("trajectories", "trajectory_ratings"),
    ),
}


def normalize_stage(name: str) -> str:
    return name.strip().lower().replace("-", "_")


def load_stage_flow(stage: str) -> Any | None:
    """The Prefect flow object of `flows/<stage>.py`, or None while that stage does not exist.

    The flow is the module attribute that is a Flow named like the stage (`multi_turn` or
    `multi-turn`); a module with a single Flow uses that one.
    """
    from prefect import Flow

    module_name = f"flows.{normalize_stage(stage)}"
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name in (module_name, "flows"):
            return None
        raise
    flows = [v for v in vars(module).values() if isinstance(v, Flow)]
    named = [f for f in flows if normalize_stage(f.name) == normalize_stage(stage)]
    local = [f for f in flows if getattr(f.fn, "__module__", None) == module_name]
    for candidates in (named, local if len(local) == 1 else [], flows if len(flows) == 1 else []):
        if candidates:
            return candidates[0]
    return None


def stage_pending_counter(stage: str) -> Callable[[Store], int] | None:
    module = _stage_module(stage)
    counter = getattr(module, "count_pending", None) if module else None
    return counter if callable(counter) else None


def _stage_module(stage: str) -> Any | None:
    try:
        return importlib.import_module(f"flows.{normalize_stage(stage)}")
    except ModuleNotFoundError:
        return None


def latest_runs(store: Store) -> dict[str, Run]:
    """The newest run of each stage, keyed by normalized stage name."""
    newest: dict[str, Run] = {}
    for run in store.select(Run):
        key = normalize_stage(run.stage)
        if key not in newest or run.started_at > newest[key].started_at:
            newest[key] = run
    return newest


def count_pending(store: Store, stage: str) -> int | None:
    """Unfinished items of a stage, or None when the stage has no item-level ledger."""
    counter = stage_pending_counter(stage)
    if counter is not None:
        return int(counter(store))
    if stage not in PENDING_SQL or not store.path.exists():
        return None
    sql, tables = PENDING_SQL[stage]
    present = {r[0] for r in store.query("SELECT table_name FROM information_schema.tables")}
    if not set(tables) <= present:
        return None
    return int(store.query(sql)[0][0])


def explain_incomplete(store: Store, stage: str, runs: dict[str, Run] | None = None) -> str | None:
    """None when the stage is complete, else a snake_case reason."""
    stage = normalize_stage(stage)
    runs = latest_runs(store) if runs is None else runs
    latest = runs.get(stage)
    if latest is None:
        return "never_ran"
    if latest.status != "completed" or latest.finished_at is None:
        return f"last_run_{latest.status}"
    upstream_end = _latest_upstream_end(stage, runs)
    if upstream_end is not None and upstream_end > latest.finished_at:
        return "upstream_changed"
    pending = count_pending(store, stage)
    if pending:
        return "pending_items"
    return None


def _latest_upstream_end(stage: str, runs: dict[str, Run]) -> datetime | None:
    ends = [
        r.finished_at
        for s in STAGES[: STAGES.index(stage)]
        if (r := runs.get(s)) is not None and r.status == "completed" and r.finished_at
    ]
    return max(ends) if ends else None


def stage_kwargs(flow: Any, offered: dict[str, Any]) -> dict[str, Any]:
    """The offered parameters this flow declares, leaving out None so its defaults apply."""
    accepted = inspect.signature(flow.fn).parameters
    aliases = {"store_path": "store", "config_path": "config"}
    kwargs = {}
    for name in accepted:
        value = offered.get(name, offered.get(aliases.get(name, "")))
        if value is not None:
            kwargs[name] = value
    return kwargs
