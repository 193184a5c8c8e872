"""Stage 5, one trajectory: rule flags, a judge's completeness and conciseness (reasoning before
each score, seeing every tool call with its arguments and its result), tool accuracy, and the
configured keep rule. Every flag and score is stored, kept or not."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from tasks.llm_batch import BatchOutput, LlmLane, rating_event, run_llm_batch
from tasks.prompt_budget import capped_response_format
from tasks.trajectory_rules import evaluate_rules, tool_accuracy
from toucan.config import FilterTrajectoriesConfig, PromptBudget
from toucan.errors import LlmError, error_row_fields
from toucan.events import joined_servers
from toucan.ids import make_id
from toucan.llm.parsing import response_format_for
from toucan.llm.replies import CallMeta
from toucan.llm.router import LlmRouter
from toucan.llm.structured import complete_structured
from toucan.prompts import RenderedPrompt, render
from toucan.records import TRAJECTORY_SCORES, Score, Task, Trajectory, TrajectoryRating

logger = logging.getLogger(__name__)

STAGE = "filter_trajectories"
JUDGE_GROUP = "judge"
DIMENSIONS = TRAJECTORY_SCORES
MIN_SCORE, MAX_SCORE = 1, 5
JUDGE_RESULT_CHARS = 1_500  # of each tool result shown to the judge (the reference showed 100)


class JudgedScore(BaseModel):
    model_config = ConfigDict(extra="ignore")

    reasoning: str
    # the enum keeps constrained decoders (llama.cpp ignores minimum/maximum) in 1-5
    score: int = Field(
        json_schema_extra={
            "minimum": MIN_SCORE,
            "maximum": MAX_SCORE,
            "enum": list(range(MIN_SCORE, MAX_SCORE + 1)),
        }
    )


class TrajectoryJudgeReply(BaseModel):
    model_config = ConfigDict(extra="ignore")

    completeness: JudgedScore
    conciseness: JudgedScore


JUDGE_RESPONSE_FORMAT = response_format_for(TrajectoryJudgeReply)


class RatingItem(BaseModel):
    trajectory: Trajectory
    task: Task


def make_rating_id(trajectory_id: str, judges: Sequence[str]) -> str:
    return make_id("traj_rating", trajectory_id, sorted(judges))


def shorten(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[:limit] + f"\n...[cut for review: {len(text)} characters in total]"


def build_transcript(
    row: Trajectory, result_chars: int = JUDGE_RESULT_CHARS
) -> list[dict[str, str]]:
    """The judge's view: assistant text, each call with its full arguments, each result."""
    steps = []
    names = {}
    for message in row.messages:
        role = message.get("role")
        if role == "assistant":
            if content := str(message.get("content") or "").strip():
                steps.append({"heading": "Assistant", "body": content})
            for call in message.get("tool_calls") or []:
                function = call.get("function", {})
                names[call.get("id")] = function.get("name")
                steps.append(
                    {
                        "heading": f"Tool call {function.get('name')} [{call.get('id')}]",
                        "body": f"arguments: {function.get('arguments')}",
                    }
                )
        elif role == "tool":
            call_id = message.get("tool_call_id")
            name = names.get(call_id, message.get("name", ""))
            steps.append(
                {
                    "heading": f"Tool result {name} [{call_id}]",
                    "body": shorten(str(message.get("content") or ""), result_chars),
                }
            )
    if row.stop_reason != "final_answer":
        steps.append(
            {"heading": "Note", "body": f"the run ended without a final answer ({row.stop_reason})"}
        )
    return steps


def render_judge_prompt(row: Trajectory, task_row: Task) -> RenderedPrompt:
    return render(
        f"{STAGE}/judge",
        question=task_row.question or row.metadata.get("question", ""),
        target_tools=[t.model_dump() for t in task_row.target_tools]
        if task_row.kind != "irrelevant"
        else [],
        transcript=build_transcript(row),
    )


def decide_keep(
    flags: dict[str, bool], scores: dict[str, Score], section: FilterTrajectoriesConfig
) -> str | None:
    """None when kept, else the first reason: a fired drop flag, then a low score."""
    for flag in section.drop_flags:
        if flags.get(flag):
            return flag
    if scores["completeness"].score < section.min_completeness:
        return "low_completeness"
    if scores["conciseness"].score < section.min_conciseness:
        return "low_conciseness"
    return None


def base_rating(
    row: Trajectory, task_row: Task, judges: list[str], run_id: str
) -> TrajectoryRating:
    flags, findings = evaluate_rules(row, task_row)
    return TrajectoryRating(
        rating_id=make_rating_id(row.trajectory_id, judges),
        trajectory_id=row.trajectory_id,
        judge=judges[0] if judges else "",
        flags=flags,
        tool_accuracy=tool_accuracy(row, task_row),
        leaks=findings.leaks,
        raw_reply=json.dumps(findings.model_dump())
        if findings.failed_calls or findings.leaks
        else None,
        run_id=run_id,
    )


async def rate_trajectory(
    row: Trajectory,
    task_row: Task,
    router: LlmRouter,
    section: FilterTrajectoriesConfig,
    run_id: str,
    budget: PromptBudget | None = None,
) -> TrajectoryRating:
    """One trajectory -> one TrajectoryRating (kept or not, with every flag and score).
    `budget` caps the length of each reasoning the judge writes."""
    rating = base_rating(row, task_row, router.groups[JUDGE_GROUP], run_id)
    if row.status != "ok":
        return rating.model_copy(update={"reason": "trajectory_failed"})
    prompt = render_judge_prompt(row, task_row)
    rating = rating.model_copy(update={"prompt_hash": prompt.template_hash})
    meta = CallMeta(run_id=run_id, stage=STAGE, item_id=row.trajectory_id)
    try:
        parsed, reply = await complete_structured(
            router,
            JUDGE_GROUP,
            prompt.messages,
            TrajectoryJudgeReply,
            meta=meta,
            response_format=capped_response_format(JUDGE_RESPONSE_FORMAT, budget or PromptBudget()),
        )
    except Exception as error:  # the stage edge: one broken item must not stop the batch
        if not isinstance(error, LlmError):
            logger.exception("rating %s failed", row.trajectory_id)
        return rating.model_copy(update=error_row_fields(error))
    scores = {
        name: Score(reasoning=getattr(parsed, name).reasoning, score=getattr(parsed, name).score)
        for name in DIMENSIONS
    }
    update: dict[str, Any] = {"judge": reply.deployment, "scores": scores, **reply.row_fields()}
    if any(not MIN_SCORE <= s.score <= MAX_SCORE for s in scores.values()):
        return rating.model_copy(
            update={
                **update,
                "status": "error",
                "reason": "score_out_of_range",
                "raw_reply": reply.text,
            }
        )
    reason = decide_keep(rating.flags, scores, section)
    update.update(
        overall=round(sum(s.score for s in scores.values()) / len(scores), 4),
        keep=reason is None,
        reason=reason,
    )
    return rating.model_copy(update=update)


async def filter_trajectories_batch(
    items: list[RatingItem], lane: LlmLane, section: FilterTrajectoriesConfig
) -> BatchOutput:
    """A batch of trajectories, at most `lane.concurrency` in flight; each yields one rating."""

    async def work(item: RatingItem, router: LlmRouter) -> list[TrajectoryRating]:
        budget = lane.models.prompt_budget
        return [
            await rate_trajectory(item.trajectory, item.task, router, section, lane.run_id, budget)
        ]

    return await run_llm_batch(
        items,
        lane,
        STAGE,
        work,
        lambda rows: rating_event(rows[0].trajectory_id, rows[0]),
        lambda item: joined_servers(item.task.server_ids),
    )
