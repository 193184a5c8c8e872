"""Stage 3, one task: the judge scores six dimensions (reasoning before each score); the task is
kept when every score reaches its configured threshold.

Scores come back as integers in a JSON object (structured output), not as text labels matched
by substring. A score outside 1-5 makes an error row `score_out_of_range` with the raw reply.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, create_model

from tasks.llm_batch import BatchOutput, LlmLane, rating_event, run_llm_batch
from tasks.prompt_budget import budget_view, capped_response_format
from tasks.sampling import ServerView
from tasks.synthesize import server_payload
from toucan.config import PromptBudget
from toucan.errors import ConfigError, LlmError, error_row_fields
from toucan.events import joined_servers
from toucan.ids import make_id
from toucan.llm.parsing import response_format_for
from toucan.llm.replies import CallMeta, LlmReply
from toucan.llm.router import LlmRouter
from toucan.llm.structured import complete_structured
from toucan.prompts import RenderedPrompt, render
from toucan.records import TASK_SCORES, Score, Task, TaskRating

logger = logging.getLogger(__name__)

STAGE = "filter_tasks"
JUDGE_GROUP = "judge"
DIMENSIONS = TASK_SCORES
MIN_SCORE, MAX_SCORE = 1, 5


class JudgedScore(BaseModel):
    """Reasoning first, then the score: the field order is the order the model writes in."""

    model_config = ConfigDict(extra="ignore")

    reasoning: str
    # The enum is for constrained decoders (llama.cpp's grammar ignores minimum/maximum);
    # parsing accepts any integer so that 0 or 7 becomes `score_out_of_range`, not a parse error.
    score: int = Field(
        json_schema_extra={
            "minimum": MIN_SCORE,
            "maximum": MAX_SCORE,
            "enum": list(range(MIN_SCORE, MAX_SCORE + 1)),
        }
    )


JudgeReply: type[BaseModel] = create_model(
    "JudgeReply",
    __config__=ConfigDict(extra="ignore"),
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


def scores_from_reply(parsed: BaseModel) -> dict[str, Score]:
    return {
        dimension: Score(
            reasoning=getattr(parsed, dimension).reasoning, score=getattr(parsed, dimension).score
        )
        for dimension in DIMENSIONS
    }


def out_of_range(scores: Mapping[str, Score]) -> list[str]:
    return [d for d, s in scores.items() if not MIN_SCORE <= s.score <= MAX_SCORE]


def decide_keep(scores: Mapping[str, Score], thresholds: Mapping[str, int]) -> str | None:
    """None when every dimension reaches its threshold, else `low_<first failing dimension>`."""
    for dimension in DIMENSIONS:
        if scores[dimension].score < thresholds[dimension]:
            return f"low_{dimension}"
    return None


def rating_from_reply(
    rating: TaskRating, parsed: BaseModel, reply: LlmReply, thresholds: Mapping[str, int]
) -> TaskRating:
    scores = scores_from_reply(parsed)
    update: dict[str, Any] = {"judge": reply.deployment, "scores": scores, **reply.row_fields()}
    bad = out_of_range(scores)
    if bad:
        update.update(status="error", reason="score_out_of_range", raw_reply=reply.text)
        return rating.model_copy(update=update)
    reason = decide_keep(scores, thresholds)
    update.update(
        overall=round(sum(s.score for s in scores.values()) / len(scores), 4),
        keep=reason is None,
        reason=reason,
    )
    return rating.model_copy(update=update)


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
    prompt = render_judge_prompt(task_row, shown)
    rating = rating.model_copy(update={"prompt_hash": prompt.template_hash})
    meta = CallMeta(
        run_id=run_id, stage=STAGE, server_id=shown[0].server_id, item_id=task_row.task_id
    )
    try:
        parsed, reply = await complete_structured(
            router,
            JUDGE_GROUP,
            prompt.messages,
            JudgeReply,
            meta=meta,
            response_format=capped_response_format(JUDGE_RESPONSE_FORMAT, budget),
        )
    except Exception as error:  # the stage edge: one broken item must not stop the batch
        if not isinstance(error, LlmError):
            logger.exception("rating %s failed", task_row.task_id)
        return rating.model_copy(update=error_row_fields(error))
    return rating_from_reply(rating, parsed, reply, thresholds)


async def filter_tasks_batch(
    tasks: list[Task], lane: LlmLane, views: dict[str, ServerView], thresholds: dict[str, int]
) -> BatchOutput:
    """A batch of tasks, at most `lane.concurrency` in flight; every task yields one TaskRating."""

    async def work(task_row: Task, router: LlmRouter) -> list[TaskRating]:
        budget = lane.models.prompt_budget
        return [await rate_task(task_row, views, router, thresholds, lane.run_id, budget)]

    return await run_llm_batch(
        tasks,
        lane,
        STAGE,
        work,
        lambda rows: rating_event(rows[0].task_id, rows[0]),
        lambda task_row: joined_servers(task_row.server_ids),
    )
