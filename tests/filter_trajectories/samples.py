"""Hand-built trajectories and tasks for the stage 5 tests (records, not mocks)."""

from __future__ import annotations

import json
from typing import Any

from toucan.ids import make_id
from toucan.records import TargetTool, Task, Trajectory

SERVER = "srv_calc"


def make_task(
    kind: str = "original",
    targets: tuple[str, ...] = ("calculate",),
    question: str = "What is 6*7?",
) -> Task:
    return Task(
        task_id=make_id("task", question, kind),
        kind=kind,
        strategy="single_server",
        question=question,
        server_ids=[SERVER],
        target_tools=[TargetTool(server_id=SERVER, server="calculator", tool=t) for t in targets],
    )


def make_trajectory(
    task: Task,
    calls: list[tuple[str, dict[str, Any], str, bool]],
    answer: str = "The answer is 42.",
    teacher: str = "Teacher-A",
    stop_reason: str = "final_answer",
    status: str = "ok",
) -> Trajectory:
    """calls: (tool, arguments, result text, is_error) in order, all in one turn."""
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "You help."},
        {"role": "user", "content": task.question},
    ]
    log = []
    if calls:
        messages.append(
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": f"c{i}",
                        "type": "function",
                        "function": {"name": tool, "arguments": json.dumps(args)},
                    }
                    for i, (tool, args, _, _) in enumerate(calls)
                ],
            }
        )
        for i, (tool, args, text, is_error) in enumerate(calls):
            messages.append(
                {"role": "tool", "tool_call_id": f"c{i}", "name": tool, "content": text}
            )
            log.append(
                {
                    "call_id": f"c{i}",
                    "name": tool,
                    "server_id": SERVER,
                    "server": "calculator",
                    "tool": tool,
                    "arguments": args,
                    "is_error": is_error,
                    "error_reason": "tool_error" if is_error else None,
                    "latency_ms": 3.0,
                }
            )
    messages.append({"role": "assistant", "content": answer})
    return Trajectory(
        trajectory_id=make_id("traj", task.task_id, teacher, answer, len(calls)),
        task_id=task.task_id,
        kind="irrelevant" if task.kind == "irrelevant" else "original",
        teacher=teacher,
        messages=messages,
        tool_calls=len(calls),
        tool_errors=sum(1 for c in calls if c[3]),
        tool_call_log=log,
        tool_name_map={
            "calculate": {"server_id": SERVER, "server": "calculator", "tool": "calculate"}
        },
        stop_reason=stop_reason,
        status=status,
        metadata={"question": task.question, "final_answer": answer},
    )
