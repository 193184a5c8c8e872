"""What an estimate asks of each model-calling stage: its real plan (the stage job's own `plan`
on a read-only context, or the selection it calls), the first request each planned item would
send (rendered by the stage's own prompt functions in tasks/), the same request for items a past
run did (to compare our token count with the provider's), and how many of its items each item
of the stage before it brings.

A stage missing here calls no model (onboard, irrelevance, export, report).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal

from flows.estimate_history import (
    ok_tasks_per_slot,
    one_rating_each,
    question_chars,
    trajectories_per_task,
    units_per_rating,
)
from flows.queries import load_server_views
from flows.registry import stage as stage_def
from flows.run_context import StagePlan, reading_run
from flows.runner import StageJob
from flows.trajectories import plan_work, resolve_teachers
from mcp_env.results import ListedTool
from tasks import diversify
from tasks import trajectory_records as traj
from tasks.first_requests import (
    Catalog,
    Request,
    diversify_request,
    planned_task,
    sent_opening,
    slot_of,
    stand_in_question,
    synthesis_request,
    task_judge_request,
    trajectory_judge_request,
    trajectory_opening,
)
from tasks.trajectory_records import TrajectoryItem
from toucan.config import Settings
from toucan.estimate import SAMPLE_ITEMS, evenly
from toucan.records import Server, Task, Tool, Trajectory
from toucan.store import Store, among

Group = Literal["generator", "teacher", "judge"]
USUAL_QUESTION_CHARS = 300  # a question not written yet, before any was: a typical length


@dataclass(frozen=True)
class ProbeItem:
    """One planned item: who answers it (None: the router picks a deployment of the stage's
    group per item), its prompt template, and its first request, rendered on demand (`render`
    None: the stage has no renderer; `render()` None: the item makes no model call)."""

    item_id: str
    deployment: str | None
    template: str | None
    render: Callable[[], Request | None] | None


@dataclass
class Probed:
    items: list[ProbeItem]
    already_done: int
    concurrency: int  # items in flight at once, as the plan sets it
    handed: list[Task] = field(default_factory=list)  # a sample of the tasks it hands on


StandIns = Callable[[list[Task], Store, Settings, dict[str, Any]], list[ProbeItem]]


@dataclass(frozen=True)
class Probe:
    group: Group
    agent: bool  # several model turns per item (prompts grow per turn)
    plan: Callable[[Store, Settings, dict[str, Any]], Probed]
    past_requests: Callable[[Store, Settings, list[str]], dict[str, Request]] | None
    # (upstream stage, items of this stage per upstream item and where that came from)
    feeds: tuple[str, Callable[[Store, Settings, dict[str, Any]], tuple[float, str]]] | None
    renders: bool = True  # False: its prompts depend on earlier turns; history alone says
    # items standing for the projected ones, from the tasks the stages before it hand on
    stand_ins: StandIns | None = None
    passes_on: bool = False  # the tasks handed to it go on to the next stage (a filter)


def job_plan(
    name: str, store: Store, settings: Settings, params: dict[str, Any]
) -> tuple[Any, StagePlan[Any]]:
    """The stage job's own plan on a read-only context (no run row, no lock, no writes): the
    flow's defaults fill the parameters not given, as a run's would."""
    entry = stage_def(name)
    bound = inspect.signature(entry.flow.fn).bind_partial(**params)
    bound.apply_defaults()
    own = {k: v for k, v in bound.arguments.items() if k not in ("store", "config", "profile")}
    job: StageJob[Any] = entry.job(settings, own)
    with reading_run(store, settings, name, job.run_params()) as ctx:
        return job, job.plan(ctx)


def plan_items(plan: StagePlan[Any]) -> list[Any]:
    """The planned items, in plan order (a batch is a list, or an agent batch's `items`)."""
    return [item for batch in plan.batches for item in getattr(batch, "items", batch)]


def lanes(plan: StagePlan[Any]) -> int:
    return plan.running * plan.per_batch


# -- synthesize ----------------------------------------------------------------------------


def plan_synthesize(store: Store, settings: Settings, params: dict[str, Any]) -> Probed:
    job, plan = job_plan("synthesize", store, settings, params)
    budget = settings.models.prompt_budget
    items = [
        ProbeItem(
            s.task_id,
            s.generator,
            f"synthesize/{s.strategy}",
            partial(synthesis_request, s, job.views, budget),
        )
        for s in plan_items(plan)
    ]
    question = stand_in_question(round(question_chars(store) or USUAL_QUESTION_CHARS))
    handed = [planned_task(s, job.views, question) for s in evenly(plan_items(plan), SAMPLE_ITEMS)]
    return Probed(items, plan.already_done, lanes(plan), handed)


def past_synthesize(store: Store, settings: Settings, ids: list[str]) -> dict[str, Request]:
    views = {v.server_id: v for v in load_server_views(store)}
    requests = {}
    for task_row in store.select(Task, among("task_id"), [ids]):
        slot = slot_of(task_row)
        if slot is not None and all(sid in views for sid in slot.server_ids):
            requests[slot.task_id] = synthesis_request(slot, views, settings.models.prompt_budget)
    return requests


# -- filter-tasks --------------------------------------------------------------------------


def judge_items(tasks: list[Task], store: Store, settings: Settings) -> list[ProbeItem]:
    views = {v.server_id: v for v in load_server_views(store)}
    budget = settings.models.prompt_budget
    return [
        ProbeItem(t.task_id, None, None, partial(task_judge_request, t, views, budget))
        for t in tasks
    ]


def plan_filter_tasks(store: Store, settings: Settings, params: dict[str, Any]) -> Probed:
    _, plan = job_plan("filter_tasks", store, settings, params)
    tasks = plan_items(plan)
    handed = evenly(tasks, SAMPLE_ITEMS)
    return Probed(judge_items(tasks, store, settings), plan.already_done, lanes(plan), handed)


def judge_stand_ins(
    tasks: list[Task], store: Store, settings: Settings, params: dict[str, Any]
) -> list[ProbeItem]:
    return judge_items(tasks, store, settings)


def past_filter_tasks(store: Store, settings: Settings, ids: list[str]) -> dict[str, Request]:
    views = {v.server_id: v for v in load_server_views(store)}
    rows = store.select(Task, among("task_id"), [ids])
    budget = settings.models.prompt_budget
    requests = {t.task_id: task_judge_request(t, views, budget) for t in rows}
    return {item_id: request for item_id, request in requests.items() if request is not None}


# -- trajectories --------------------------------------------------------------------------


def store_catalog(store: Store) -> Catalog:
    """Every ok server's current tools as the store lists them (no server is started)."""
    catalog: Catalog = {s.server_id: (s.name, []) for s in store.select(Server, "status = 'ok'")}
    for tool in store.select(Tool, "current ORDER BY server_id, name"):
        if tool.server_id in catalog:
            listed = ListedTool(
                name=tool.name,
                description=tool.description,
                input_schema=tool.input_schema,
                schema_hash=tool.schema_hash,
            )
            catalog[tool.server_id][1].append(listed)
    return catalog


def opening_items(
    items: list[TrajectoryItem], catalog: Catalog, settings: Settings
) -> list[ProbeItem]:
    return [
        ProbeItem(
            i.trajectory_id,
            i.teacher,
            i.style,
            partial(trajectory_opening, i, catalog, settings.models),
        )
        for i in items
    ]


def plan_trajectories(store: Store, settings: Settings, params: dict[str, Any]) -> Probed:
    # the selection the stage's plan makes, without its journal ingestion (a write)
    teachers = resolve_teachers(settings, params.get("teachers"))
    styles = params.get("styles") or list(settings.trajectories.styles)
    work = plan_work(store, settings, teachers, styles, params.get("limit"))
    items = opening_items(work.items, store_catalog(store), settings)
    return Probed(items, work.already_done, work.parallel_batches * work.per_batch_concurrency)


def trajectory_stand_ins(
    tasks: list[Task], store: Store, settings: Settings, params: dict[str, Any]
) -> list[ProbeItem]:
    """Items of the handed tasks (every chosen teacher and style) whose servers are ok now."""
    catalog = store_catalog(store)
    teachers = resolve_teachers(settings, params.get("teachers"))
    styles = params.get("styles") or list(settings.trajectories.styles)
    usable = [t for t in tasks if t.server_ids and all(s in catalog for s in t.server_ids)]
    return opening_items(traj.plan_items(usable, teachers, styles), catalog, settings)


def past_trajectories(store: Store, settings: Settings, ids: list[str]) -> dict[str, Request]:
    rows = store.select(Trajectory, among("trajectory_id"), [ids])
    return {row.trajectory_id: sent_opening(row) for row in rows}


# -- filter-trajectories -------------------------------------------------------------------


def plan_filter_trajectories(store: Store, settings: Settings, params: dict[str, Any]) -> Probed:
    _, plan = job_plan("filter_trajectories", store, settings, params)
    items = [
        ProbeItem(
            i.trajectory.trajectory_id,
            None,
            None,
            partial(trajectory_judge_request, i.trajectory, i.task),
        )
        for i in plan_items(plan)
    ]
    return Probed(items, plan.already_done, lanes(plan))


def past_filter_trajectories(
    store: Store, settings: Settings, ids: list[str]
) -> dict[str, Request]:
    rows = store.select(Trajectory, among("trajectory_id"), [ids])
    task_ids = sorted({r.task_id for r in rows})
    tasks = {t.task_id: t for t in store.select(Task, among("task_id"), [task_ids])}
    requests = {
        r.trajectory_id: trajectory_judge_request(r, tasks[r.task_id])
        for r in rows
        if r.task_id in tasks
    }
    return {item_id: request for item_id, request in requests.items() if request is not None}


# -- diversify -----------------------------------------------------------------------------


def plan_diversify(store: Store, settings: Settings, params: dict[str, Any]) -> Probed:
    _, plan = job_plan("diversify", store, settings, params)
    budget = settings.models.prompt_budget
    items = [
        ProbeItem(
            diversify.variant_id(u.task.task_id, u.mode, 0),
            None,
            f"diversify/{u.mode}",
            partial(diversify_request, u, budget),
        )
        for u in plan_items(plan)
    ]
    return Probed(items, plan.already_done, lanes(plan))


# -- multi-turn (history only: its prompts depend on the conversation so far) --------------


def plan_multi_turn(store: Store, settings: Settings, params: dict[str, Any]) -> Probed:
    _, plan = job_plan("multi_turn", store, settings, params)
    items = [ProbeItem(i.trajectory_id, i.teacher, i.method, None) for i in plan_items(plan)]
    concurrency = settings.trajectories.concurrency
    return Probed(items, plan.already_done, concurrency)


PROBES: dict[str, Probe] = {
    "synthesize": Probe("generator", False, plan_synthesize, past_synthesize, None),
    "filter_tasks": Probe(
        "judge",
        False,
        plan_filter_tasks,
        past_filter_tasks,
        ("synthesize", ok_tasks_per_slot),
        stand_ins=judge_stand_ins,
        passes_on=True,
    ),
    "trajectories": Probe(
        "teacher",
        True,
        plan_trajectories,
        past_trajectories,
        ("filter_tasks", trajectories_per_task),
        stand_ins=trajectory_stand_ins,
    ),
    "filter_trajectories": Probe(
        "judge",
        False,
        plan_filter_trajectories,
        past_filter_trajectories,
        ("trajectories", one_rating_each),
    ),
    "diversify": Probe(
        "generator", False, plan_diversify, None, ("filter_tasks", units_per_rating)
    ),
    "multi_turn": Probe("teacher", True, plan_multi_turn, None, None, renders=False),
}
