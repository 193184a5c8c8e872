"""Stage 3, one task: the judge scores six dimensions (reasoning before each score); the task is
kept when every score reaches its configured threshold.

Scores come back as integers in a JSON object (structured output), not as text labels matched
by substring. A score outside 1-5 makes an error row `score_out_of_range` with the raw reply.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pydantic import BaseModel, create_model

from tasks.judge import JUDGE_GROUP, MIN_SCORE, JudgedScore, judge_rating, run_rating_batch
from tasks.llm_batch import BatchOutput, LlmLane
from tasks.prompt_budget import budget_view, capped_response_format
from tasks.sampling import ServerView
from tasks.synthesize import server_payload
from toucan.config import PromptBudget
from toucan.errors import ConfigError
from toucan.ids import make_id
from toucan.llm.parsing import ModelReply, response_format_for
from toucan.llm.replies import CallMeta
from toucan.llm.router import LlmRouter
from toucan.prompts import RenderedPrompt, render
from toucan.records import TASK_SCORES, Score, Task, TaskRating

STAGE = "filter_tasks"
DIMENSIONS = TASK_SCORES


JudgeReply: type[BaseModel] = create_model(
    "JudgeReply",
    __base__=ModelReply,
    **{dimension: (JudgedScore, ...) for dimension in DIMENSIONS},  # type: ignore[call-overload]
)


JUDGE_RESPONSE_FORMAT = response_format_for(JudgeReply)  # built once: schemas cost ms each


def check_thresholds(thresholds: Mapping[str, int]) -> dict[str, int]:
    """The thresholds for all six dimensions (1 where unset); unknown names are a typo."""
    unknown = sorted(set(thresholds) - set(DIMENSIONS))
    if unknown:
        raise ConfigError(
            f"filter_tasks.thresholds: unknown dimension(s) {unknown}; known: {list(DIMENSIONS)}"
        )
    return {dimension: int(thresholds.get(dimension, MIN_SCORE)) for dimension in DIMENSIONS}


def make_rating_id(task_id: str, judges: Sequence[str]) -> str:
    return make_id("task_rating", task_id, sorted(judges))


def judged_views(
    task_row: Task, views: Mapping[str, ServerView], budget: PromptBudget
) -> list[ServerView]:
    """The task's servers as the judge sees them: the target tools always among those shown."""
    return [
        budget_view(
            views[server_id],
            budget,
            task_row.task_id,
            keep={t.tool for t in task_row.target_tools if t.server_id == server_id},
        )
        for server_id in task_row.server_ids
        if server_id in views
    ]


def render_judge_prompt(task_row: Task, views: Sequence[ServerView]) -> RenderedPrompt:
    return render(
        f"{STAGE}/judge",
        servers=[server_payload(view) for view in views],
        question=task_row.question,
        target_tools=[t.model_dump() for t in task_row.target_tools],
    )


def decide_keep(scores: Mapping[str, Score], thresholds: Mapping[str, int]) -> str | None:
    """None when every dimension reaches its threshold, else `low_<first failing dimension>`."""
    for dimension in DIMENSIONS:
        if scores[dimension].score < thresholds[dimension]:
            return f"low_{dimension}"
    return None


async def rate_task(
    task_row: Task,
    views: Mapping[str, ServerView],
    router: LlmRouter,
    thresholds: Mapping[str, int],
    run_id: str,
    budget: PromptBudget | None = None,
) -> TaskRating:
    """One task -> one TaskRating: kept or not by the thresholds, or an error with its reason.
    `budget` cuts the tools shown and caps each reasoning's length."""
    budget = budget or PromptBudget()
    judges = router.groups[JUDGE_GROUP]
    rating = TaskRating(
        rating_id=make_rating_id(task_row.task_id, judges),
        task_id=task_row.task_id,
        judge=judges[0] if judges else "",
        run_id=run_id,
    )
    shown = judged_views(task_row, views, budget)
    if not shown:
        return rating.model_copy(update={"status": "error", "reason": "server_missing"})
    meta = CallMeta(
        run_id=run_id, stage=STAGE, server_id=shown[0].server_id, item_id=task_row.task_id
    )
    return await judge_rating(
        rating,
        router,
        render_judge_prompt(task_row, shown),
        JudgeReply,
        capped_response_format(JUDGE_RESPONSE_FORMAT, budget),
        meta,
        lambda scores: decide_keep(scores, thresholds),
    )


async def filter_tasks_batch(
    tasks: list[Task], lane: LlmLane, views: dict[str, ServerView], thresholds: dict[str, int]
) -> BatchOutput:
    """A batch of tasks, at most `lane.concurrency` in flight; every task yields one TaskRating."""
    budget = lane.models.prompt_budget

    async def rate(task_row: Task, router: LlmRouter) -> TaskRating:
        return await rate_task(task_row, views, router, thresholds, lane.run_id, budget)

    return await run_rating_batch(
        tasks, lane, STAGE, rate, lambda rating: rating.task_id, lambda t: t.server_ids
    )
