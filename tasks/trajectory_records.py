"""Stage 4's records and pure functions: the work items and batches, and the rows built from
an agent run (everything the teacher saw and did, and how it ended)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from pydantic import BaseModel

from mcp_env.server_requests import ServerExchange
from tasks.agent import AgentRun, Toolbox, name_map
from tasks.agent.batch import AgentBatch, group_by_servers
from tasks.agent.naming import ExposedTool
from tasks.agent.styles import agent_style, check_styles
from tasks.tool_offer import original_tools
from toucan.ids import make_id
from toucan.records import (
    Task,
    Trajectory,
    Usage,
    utc_now,
)

STAGE = "trajectories"
TRAJECTORY_KIND = {"irrelevant": "irrelevant", "diversified": "diversified"}


class TrajectoryItem(BaseModel):
    trajectory_id: str
    task: Task
    teacher: str
    style: str


class TrajectoryBatch(AgentBatch):
    """One server group's items: they share a session pool."""

    items: list[TrajectoryItem]


def make_trajectory_id(task_id: str, teacher: str, style: str) -> str:
    return make_id("traj", task_id, teacher, style)


def plan_items(
    tasks: Sequence[Task], teachers: Sequence[str], styles: Sequence[str]
) -> list[TrajectoryItem]:
    """Every (task, teacher, style) combination, in a stable order. Raises ConfigError
    (`unknown_agent_style`) for a style not in tasks/agent/styles.py."""
    styles = check_styles(styles)
    return [
        TrajectoryItem(
            trajectory_id=make_trajectory_id(t.task_id, teacher, style),
            task=t,
            teacher=teacher,
            style=style,
        )
        for t in sorted(tasks, key=lambda t: t.task_id)
        for teacher in teachers
        for style in styles
    ]


def group_into_batches(
    items: Sequence[TrajectoryItem], batch_size: int, lanes: int | None = None, scout_size: int = 1
) -> list[TrajectoryBatch]:
    """Items grouped by their exact server set, then cut into chunks of `batch_size`; with
    more groups than `lanes`, each group's first chunk is a scout of `scout_size` items, and
    the scouts go first (`group_by_servers`)."""
    return group_by_servers(
        items, batch_size, TrajectoryBatch, "batch", lanes=lanes, scout_size=scout_size
    )


def build_trajectory(
    item: TrajectoryItem, run: AgentRun, toolbox: Toolbox, started_at: datetime, run_id: str
) -> Trajectory:
    """The row: everything the teacher saw and did, and how it ended."""
    failed = run.stop_reason in ("model_error", "server_unavailable")
    return Trajectory(
        trajectory_id=item.trajectory_id,
        task_id=item.task.task_id,
        kind=TRAJECTORY_KIND.get(item.task.kind, "original"),  # type: ignore[arg-type]
        teacher=item.teacher,
        model=run.model,
        style=item.style,
        **run_fields(run, toolbox),
        turns=run.turns,
        tool_calls=len(toolbox.log),
        tool_errors=toolbox.errors,
        tool_call_log=list(toolbox.log),
        stop_reason=run.stop_reason,
        status="error" if failed else "ok",
        reason=(run.error_reason or run.stop_reason) if failed else None,
        metadata=trajectory_metadata(item, run, toolbox),
        run_id=run_id,
        started_at=started_at,
        finished_at=utc_now(),
    )


def run_fields(run: AgentRun, toolbox: Toolbox) -> dict[str, Any]:
    """The Trajectory fields every agent stage fills the same way from a run: the transcript,
    what was offered (every tool of the run, latest schemas), who answered and what it took
    (the teacher's turns plus the servers' sampling/elicitation requests)."""
    offered = offered_ever(toolbox)
    return {
        "deployment": run.deployment,
        "served_by": run.served_by,
        "served_by_embedded": run.served_by_embedded,
        "messages": run.messages,
        "tools": run.tools,
        "original_tools": original_tools(offered),
        "tool_name_map": name_map(offered),
        "schema_hashes": {tool.name: tool.schema_hash for tool in offered},
        "usage": run_usage(run, toolbox),
        "cost_usd": run.cost_usd + sum(e.cost_usd for e in server_exchanges(toolbox)),
        "cached": run.cached,
        "prompt_hash": run.prompt_hash,
    }


def trajectory_metadata(item: TrajectoryItem, run: AgentRun, toolbox: Toolbox) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "question": item.task.question,
        "final_answer": run.final_answer,
        "tools_channel": agent_style(item.style).tools_channel,
        "replayed_tool_calls": sum(1 for entry in toolbox.log if entry.replayed),
        "wall_clock_s": round(max(0.0, time.monotonic() - run.started), 3),
    }
    if run.wire_messages is not None:
        metadata["wire_messages"] = run.wire_messages
    if run.error_detail:
        metadata["error"] = run.error_detail[:2000]
    if toolbox.paused is not None:
        metadata["paused_server"] = {
            "server_id": toolbox.paused.key,
            "reason": toolbox.paused.reason,
        }
    return metadata | client_metadata(toolbox)


def offered_ever(toolbox: Toolbox) -> list[ExposedTool]:
    """Every tool the run offered (a server's tool-list change adds to it), latest schemas."""
    return list(toolbox.ever_exposed.values())


def server_exchanges(toolbox: Toolbox) -> list[ServerExchange]:
    return toolbox.responder.exchanges if toolbox.responder is not None else []


def client_metadata(toolbox: Toolbox, earlier: dict[str, Any] | None = None) -> dict[str, Any]:
    """What the servers did besides answering calls, for the row's metadata (only what
    happened): `server_requests`, each sampling/elicitation exchange with the call id it
    came with; `tool_list_changes`, each announced tool-list change (ToolListChange).
    `earlier` is the metadata of a base row the run continues (multi-turn)."""
    earlier = earlier or {}
    metadata: dict[str, Any] = {}
    exchanges = [e.model_dump(mode="json") for e in server_exchanges(toolbox)]
    if exchanges or earlier.get("server_requests"):
        metadata["server_requests"] = [*earlier.get("server_requests", []), *exchanges]
    changes = [c.model_dump(mode="json") for c in toolbox.watch.changes] if toolbox.watch else []
    if changes or earlier.get("tool_list_changes"):
        metadata["tool_list_changes"] = [*earlier.get("tool_list_changes", []), *changes]
    return metadata


def run_usage(run: AgentRun, toolbox: Toolbox) -> Usage:
    """The row's token counts; what answering the servers' sampling and elicitation cost is
    counted apart (`server_request_tokens`), as those tokens are not the teacher's turns."""
    spent = sum(e.prompt_tokens + e.completion_tokens for e in server_exchanges(toolbox))
    return run.usage.model_copy(update={"server_request_tokens": spent})


def failed_trajectory(item: TrajectoryItem, reason: str, detail: str, run_id: str) -> Trajectory:
    """A row for an item that could not run at all (its server is down, ...)."""
    return Trajectory(
        trajectory_id=item.trajectory_id,
        task_id=item.task.task_id,
        kind=TRAJECTORY_KIND.get(item.task.kind, "original"),  # type: ignore[arg-type]
        teacher=item.teacher,
        style=item.style,  # type: ignore[arg-type]
        messages=[{"role": "user", "content": item.task.question}],
        stop_reason="not_started",
        status="error",
        reason=reason,
        metadata={"question": item.task.question, "error": detail[:2000]},
        run_id=run_id,
    )
