"""The first model request an item of each stage sends, rendered by that stage's own prompt
functions, without sending it: what `toucan estimate` counts the prompt tokens of. Pure
functions over records; a request is (messages, tools), tools None when none are offered.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from mcp_env.results import ListedTool
from tasks import diversify, filter_tasks, filter_trajectories, synthesize
from tasks.agent.naming import expose_tools
from tasks.agent.styles import agent_style, opening_request
from tasks.sampling import ServerView, TaskSlot
from tasks.tool_offer import offer_tools
from tasks.trajectory_records import TrajectoryItem
from toucan.config import ModelsConfig, PromptBudget
from toucan.llm.tool_rules import rules_for
from toucan.records import TargetTool, Task, Trajectory

Request = tuple[list[dict[str, Any]], list[dict[str, Any]] | None]
Catalog = dict[str, tuple[str, list[ListedTool]]]  # server id -> (server name, its tools)


def synthesis_request(
    slot: TaskSlot, views: dict[str, ServerView], budget: PromptBudget
) -> Request:
    """A synthesis slot's request (KeyError for a server not in `views`)."""
    shown = synthesize.shown_views(slot, views, budget)
    return synthesize.render_synthesis_prompt(slot, shown).messages, None


def slot_of(task_row: Task) -> TaskSlot | None:
    """The slot a synthesized task came from, as its row recorded it (None if it cannot tell)."""
    meta = task_row.metadata
    try:
        return TaskSlot(
            task_id=task_row.task_id,
            strategy=task_row.strategy,
            allocation=meta.get("allocation", "random"),
            server_ids=tuple(meta.get("shown_server_ids") or task_row.server_ids),
            num_tools=meta.get("num_tools", len(task_row.target_tools)),
            generator=task_row.generator,
            seed=task_row.seed,
            slot=meta.get("slot", 0),
        )
    except ValidationError:
        return None


def task_judge_request(
    task_row: Task, views: dict[str, ServerView], budget: PromptBudget
) -> Request | None:
    """The task judge's request; None when none of the task's servers is left (no call)."""
    shown = filter_tasks.judged_views(task_row, views, budget)
    return (filter_tasks.render_judge_prompt(task_row, shown).messages, None) if shown else None


def trajectory_judge_request(row: Trajectory, task_row: Task) -> Request | None:
    """The trajectory judge's request; None for a failed trajectory (the rules alone rate it)."""
    if row.status != "ok":
        return None
    return filter_trajectories.render_judge_prompt(row, task_row).messages, None


def diversify_request(unit: diversify.DiversifyUnit, budget: PromptBudget) -> Request:
    return diversify.render_diversify_prompt(unit, budget.description_chars).messages, None


def trajectory_opening(item: TrajectoryItem, catalog: Catalog, models: ModelsConfig) -> Request:
    """A trajectory's first request: the offer tasks/trajectories.py makes from the servers'
    live listing, made from `catalog` (the listing as stored) for the teacher's tool rules
    (KeyError for a server not in `catalog`)."""
    rules = rules_for(models, item.teacher)
    listed = [(sid, *catalog[sid]) for sid in sorted(set(item.task.server_ids))]
    exposed = expose_tools(listed, rules=rules)
    offer = offer_tools(
        exposed, item.task.target_tools, models.prompt_budget, item.trajectory_id, rules
    )
    return opening_request(item.style, item.task.question, offer.tools)


def sent_opening(row: Trajectory) -> Request:
    """The first request a past trajectory sent, read off its row: the messages before the
    first reply, and the tools when its style offers them through the API."""
    opening = []
    for message in row.messages:
        if message.get("role") == "assistant":
            break
        opening.append(message)
    tools = row.tools if agent_style(row.style).tools_channel == "api" else None
    return opening, tools or None


FILLER_WORD = "words "  # one token in the common tokenizers


def stand_in_question(chars: int) -> str:
    """A stand-in for a question not written yet, `chars` long."""
    return (FILLER_WORD * (chars // len(FILLER_WORD) + 1))[:chars].strip()


def planned_task(slot: TaskSlot, views: dict[str, ServerView], question: str) -> Task:
    """The task a synthesis slot should become, before its generator wrote it: the slot's
    servers, its first tools as targets (round robin over the servers) and `question`, for
    rendering the requests of the stages after synthesis."""
    shown = [views[sid] for sid in slot.server_ids if sid in views and views[sid].tools]
    targets = []
    for index in range(slot.num_tools if shown else 0):
        view = shown[index % len(shown)]
        tool = view.tools[(index // len(shown)) % len(view.tools)]
        target = TargetTool(server_id=view.server_id, server=view.name, tool=tool.name)
        if target not in targets:
            targets.append(target)
    return Task(
        task_id=slot.task_id,
        strategy=slot.strategy,
        question=question,
        target_tools=targets,
        server_ids=list(slot.server_ids),
        generator=slot.generator,
        seed=slot.seed,
    )
