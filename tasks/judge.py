"""The judge's scoring, shared by the two rating stages (filter_tasks, filter_trajectories):
one reasoning + 1-5 score per dimension, asked as structured output, checked for range, and
turned into the rating row with the stage's own keep rule.

A rating here is a TaskRating or a TrajectoryRating (toucan/records.py): both carry `judge`,
`scores`, `overall`, `keep`, `status`, `reason`, `raw_reply`, `prompt_hash` and the reply's
provenance and accounting (`LlmReply.row_fields`).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

from pydantic import BaseModel, Field

from tasks.llm_batch import BatchOutput, LlmLane, rating_event, run_llm_batch
from toucan.errors import LlmError, error_row_fields
from toucan.events import joined_servers
from toucan.llm.parsing import ModelReply
from toucan.llm.replies import CallMeta, LlmReply
from toucan.llm.router import LlmRouter
from toucan.llm.structured import complete_structured
from toucan.prompts import RenderedPrompt
from toucan.records import Score, TaskRating, TrajectoryRating

logger = logging.getLogger(__name__)

JUDGE_GROUP = "judge"
MIN_SCORE, MAX_SCORE = 1, 5

RatingT = TypeVar("RatingT", TaskRating, TrajectoryRating)
ItemT = TypeVar("ItemT")
# scores by dimension -> None when kept, else the reason token of the first failing check
KeepRule = Callable[[Mapping[str, Score]], "str | None"]


class JudgedScore(ModelReply):
    """Reasoning first, then the score: the field order is the order the model writes in."""

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


def scores_from_reply(parsed: BaseModel, dimensions: Sequence[str]) -> dict[str, Score]:
    """The reply's JudgedScore of each dimension as a stored Score."""
    return {
        dimension: Score(
            reasoning=getattr(parsed, dimension).reasoning, score=getattr(parsed, dimension).score
        )
        for dimension in dimensions
    }


def out_of_range(scores: Mapping[str, Score]) -> list[str]:
    """The dimensions whose score is outside MIN_SCORE..MAX_SCORE, in the scores' order."""
    return [d for d, s in scores.items() if not MIN_SCORE <= s.score <= MAX_SCORE]


def rating_from_reply(
    rating: RatingT,
    parsed: BaseModel,
    reply: LlmReply,
    dimensions: Sequence[str],
    keep_rule: KeepRule,
) -> RatingT:
    """`rating` with the judge's scores and the reply's provenance: an error row
    `score_out_of_range` (with the raw reply) when a score is outside 1-5, else kept or not by
    `keep_rule`, with `overall` the mean score (4 places)."""
    scores = scores_from_reply(parsed, dimensions)
    update: dict[str, Any] = {"judge": reply.deployment, "scores": scores, **reply.row_fields()}
    if out_of_range(scores):
        update.update(status="error", reason="score_out_of_range", raw_reply=reply.text)
        return rating.model_copy(update=update)
    reason = keep_rule(scores)
    update.update(
        overall=round(sum(s.score for s in scores.values()) / len(scores), 4),
        keep=reason is None,
        reason=reason,
    )
    return rating.model_copy(update=update)


async def judge_rating(
    rating: RatingT,
    router: LlmRouter,
    prompt: RenderedPrompt,
    reply_schema: type[BaseModel],
    response_format: dict[str, Any],
    meta: CallMeta,
    keep_rule: KeepRule,
) -> RatingT:
    """Ask the judge group once (structured output, one repair: toucan/llm/structured.py) and
    fill `rating` from its reply. Any failure becomes an error row (`error_row_fields`): this is
    the stage edge, one broken item must not stop the batch. `reply_schema`'s fields are the
    dimensions, each a JudgedScore."""
    rating = rating.model_copy(update={"prompt_hash": prompt.template_hash})
    try:
        parsed, reply = await complete_structured(
            router,
            JUDGE_GROUP,
            prompt.messages,
            reply_schema,
            meta=meta,
            response_format=response_format,
        )
    except Exception as error:
        if not isinstance(error, LlmError):
            logger.exception("rating %s failed", meta.item_id)
        return rating.model_copy(update=error_row_fields(error))
    return rating_from_reply(rating, parsed, reply, list(reply_schema.model_fields), keep_rule)


async def run_rating_batch(
    items: Sequence[ItemT],
    lane: LlmLane,
    stage: str,
    rate: Callable[[ItemT, LlmRouter], Awaitable[RatingT]],
    rated_id: Callable[[RatingT], str],
    server_ids: Callable[[ItemT], list[str]],
) -> BatchOutput:
    """A batch of judge ratings on tasks/llm_batch.py's `run_llm_batch`: `rate` turns one item
    into its one rating (never raising); the item's event is the verdict (`rating_event`),
    under the rated row's id `rated_id(rating)` and the item's servers."""

    async def work(item: ItemT, router: LlmRouter) -> list[RatingT]:
        return [await rate(item, router)]

    return await run_llm_batch(
        items,
        lane,
        stage,
        work,
        lambda rows: rating_event(rated_id(rows[0]), rows[0]),
        lambda item: joined_servers(server_ids(item)),
    )
