"""Extension 3's records and pure functions: the conversations to build, how each was made,
and the rows built from them (with honest turn counts).
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict

from tasks.conversation import Conversation
from tasks.trajectory_records import client_metadata, run_fields
from toucan.ids import make_id
from toucan.records import Task, Trajectory, utc_now

STAGE = "multi_turn"


class MultiTurnItem(BaseModel):
    """One conversation to build: a split of `task`, or an extension of `base`."""

    trajectory_id: str
    method: Literal["split", "extend"]
    task: Task
    teacher: str
    follow_ups: int = 0  # extend: user turns to add
    base: Trajectory | None = None


def split_item_id(task_id: str, teacher: str) -> str:
    return make_id("traj", "multi_turn", "split", task_id, teacher)


def extend_item_id(base_id: str, follow_ups: int) -> str:
    return make_id("traj", "multi_turn", "extend", base_id, follow_ups)


class MultiTurnGeneration(BaseModel):
    """How a conversation was made: the row's `metadata.multi_turn_generation` (fields are
    written only once known, so a split has no `replay_failures` and an extension no
    `sub_questions`)."""

    model_config = ConfigDict(extra="forbid")

    method: Literal["split", "extend"]
    agent_model: str  # the teacher deployment
    user_simulation_model: str = "generator"  # the model group playing the user
    split_error: str | None = None  # the reason token when asking for the split failed
    sub_questions: list[str] | None = None
    replay_failures: int | None = None  # the base's calls that failed when replayed
    requested_turns: int = 0
    completed_turns: int = 0
    failed_turn_reason: str | None = None


def build_row(
    item: MultiTurnItem,
    conversation: Conversation,
    requested: int,
    details: MultiTurnGeneration,
    started_at: datetime,
) -> Trajectory:
    """The trajectory with honest turn counts: ok only when at least two user turns completed."""
    run, toolbox = conversation.run, conversation.toolbox
    completed = conversation.completed_turns
    base_log = item.base.tool_call_log if item.base is not None else []
    calls = sum(len(m.get("tool_calls") or []) for m in run.messages if m["role"] == "assistant")
    ok = completed >= 2
    reason = None if ok and completed == requested else conversation.failed_reason
    return Trajectory(
        trajectory_id=item.trajectory_id,
        task_id=item.task.task_id,
        kind="multi_turn",
        parent_id=item.base.trajectory_id if item.base is not None else None,
        teacher=item.teacher,
        model=run.model or (item.base.model if item.base is not None else ""),
        style="function-calling",
        **run_fields(run, toolbox),
        turns=run.turns + (item.base.turns if item.base is not None else 0),
        tool_calls=calls,
        tool_errors=toolbox.errors + (item.base.tool_errors if item.base is not None else 0),
        tool_call_log=[*base_log, *toolbox.log],
        stop_reason=run.stop_reason or (conversation.failed_reason or ""),
        status="ok" if ok else "error",
        reason=reason if not ok else None,
        requested_turns=requested,
        completed_turns=completed,
        metadata={
            "question": item.task.question,
            "multi_turn_generation": details.model_copy(
                update={
                    "requested_turns": requested,
                    "completed_turns": completed,
                    "failed_turn_reason": reason,
                }
            ).model_dump(exclude_unset=True),
        }
        | client_metadata(toolbox, item.base.metadata if item.base is not None else None),
        run_id=None,
        started_at=started_at,
        finished_at=utc_now(),
    )


def failed_row(item: MultiTurnItem, reason: str, detail: str, requested: int) -> Trajectory:
    return Trajectory(
        trajectory_id=item.trajectory_id,
        task_id=item.task.task_id,
        kind="multi_turn",
        parent_id=item.base.trajectory_id if item.base else None,
        teacher=item.teacher,
        messages=item.base.messages
        if item.base
        else [{"role": "user", "content": item.task.question}],
        status="error",
        reason=reason,
        stop_reason="not_started",
        requested_turns=requested,
        completed_turns=1 if item.base else 0,
        metadata={"error": detail[:2000]},
    )
