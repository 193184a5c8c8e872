"""Stage 5, one trajectory: rule flags, a judge's completeness and conciseness (reasoning before
each score, seeing every tool call with its arguments and its result), tool accuracy, and the
configured keep rule. Every flag and score is stored, kept or not."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

from pydantic import BaseModel

from tasks.judge import JUDGE_GROUP, JudgedScore, judge_rating, run_rating_batch
from tasks.llm_batch import BatchOutput, LlmLane
from tasks.prompt_budget import capped_response_format
from tasks.trajectory_rules import evaluate_rules, tool_accuracy
from toucan.config import FilterTrajectoriesConfig, PromptBudget
from toucan.ids import make_id
from toucan.llm.parsing import ModelReply, response_format_for
from toucan.llm.replies import CallMeta
from toucan.llm.router import LlmRouter
from toucan.prompts import RenderedPrompt, render
from toucan.records import TRAJECTORY_SCORES, Score, Task, Trajectory, TrajectoryRating

STAGE = "filter_trajectories"
DIMENSIONS = TRAJECTORY_SCORES
JUDGE_RESULT_CHARS = 1_500  # of each tool result shown to the judge (the reference showed 100)


class TrajectoryJudgeReply(ModelReply):
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
    flags: dict[str, bool], scores: Mapping[str, Score], section: FilterTrajectoriesConfig
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
    return await judge_rating(
        rating,
        router,
        render_judge_prompt(row, task_row),
        TrajectoryJudgeReply,
        capped_response_format(JUDGE_RESPONSE_FORMAT, budget or PromptBudget()),
        CallMeta(run_id=run_id, stage=STAGE, item_id=row.trajectory_id),
        lambda scores: decide_keep(rating.flags, scores, section),
    )


async def filter_trajectories_batch(
    items: list[RatingItem], lane: LlmLane, section: FilterTrajectoriesConfig
) -> BatchOutput:
    """A batch of trajectories, at most `lane.concurrency` in flight; each yields one rating."""
    budget = lane.models.prompt_budget

    async def rate(item: RatingItem, router: LlmRouter) -> TrajectoryRating:
        row, task_row = item.trajectory, item.task
        return await rate_trajectory(row, task_row, router, section, lane.run_id, budget)

    return await run_rating_batch(
        items, lane, STAGE, rate, lambda rating: rating.trajectory_id, lambda i: i.task.server_ids
    )
