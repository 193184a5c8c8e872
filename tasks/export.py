"""Export: kept trajectories -> rows in the Toucan-1.5M layout (all columns JSON strings).

Pure functions build, validate and scrub one row; `build_export_batch` is the Prefect task over
a batch of sources. Reading the store and writing files happen in `flows/export.py`.

Tool-call validation decision: a row with any tool call whose name is not among its available
tools, whose arguments do not parse, or whose arguments do not validate against the tool's JSON
schema is EXCLUDED (reason token counted in the dataset card), not flagged: a trainer would
learn the invalid call either way.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from mcp_env.tool_schemas import check_instance
from tasks.chat_formats import iter_tool_calls, parse_arguments
from tasks.export_provenance import provenance_metadata
from tasks.scrub import Scrubber
from toucan.ids import export_uuid
from toucan.records import Server, Task, TaskRating, Trajectory, TrajectoryRating

SUBSET_BY_KIND = {
    "original": "single-turn-original",
    "irrelevant": "irrelevant",
    "diversified": "single-turn-diversify",
    "multi_turn": "multi-turn",
}
SUBSETS = tuple(SUBSET_BY_KIND.values())
# our rating's tool accuracy keys -> Toucan-1.5M's response_quality_assessment names
TOOL_ACCURACY_NAMES = {
    "desired_tools_used": "desired_tools_used_percentage",
    "order_correct": "order_correctness",
}
EXPORT_COLUMNS = (
    "uuid",
    "subset_name",
    "messages",
    "question",
    "available_tools",
    "target_tools",
    "question_quality_assessment",
    "response_quality_assessment",
    "metadata",
)


class ExportRejected(Exception):
    """A trajectory that cannot be exported; `reason` is the token counted in the card."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


class ExportSource(BaseModel):
    """Everything one exported row is made of."""

    model_config = ConfigDict(extra="forbid")

    trajectory: Trajectory
    task: Task
    task_rating: TaskRating | None = None
    trajectory_rating: TrajectoryRating
    servers: list[Server] = Field(default_factory=list)


class ExportRow(BaseModel):
    """One row of the Toucan-1.5M layout; structured columns are JSON-encoded strings."""

    model_config = ConfigDict(extra="forbid")

    uuid: str
    subset_name: str
    messages: str
    question: str
    available_tools: str
    target_tools: str
    question_quality_assessment: str
    response_quality_assessment: str
    metadata: str


class ExportBatch(BaseModel):
    rows: list[ExportRow] = Field(default_factory=list)
    excluded: dict[str, int] = Field(default_factory=dict)  # reason -> rows
    rejected: dict[str, str] = Field(default_factory=dict)  # trajectory_id -> reason
    scrubbed: dict[str, int] = Field(default_factory=dict)  # kind -> replacements
    scrubbed_rows: dict[str, int] = Field(default_factory=dict)  # kind -> rows it was in
    rows_scrubbed: int = 0


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


def parse_trajectory_cells(cells: dict[str, Any]) -> Trajectory:
    """A trajectory from raw store cells, JSON columns still text. Raises ExportRejected.

    DuckDB's JSON type refuses malformed JSON, so broken messages arrive as a JSON string that
    holds truncated JSON (double-encoded) or as a value that is not a list of messages."""
    values = dict(cells)
    for column in (
        "messages",
        "tools",
        "original_tools",
        "tool_name_map",
        "schema_hashes",
        "tool_call_log",
        "usage",
        "metadata",
    ):
        if isinstance(values.get(column), str):
            try:
                values[column] = json.loads(values[column])
            except json.JSONDecodeError as exc:
                raise ExportRejected(f"bad_{column}_json", str(exc)) from exc
    messages = values.get("messages")
    if isinstance(messages, str):
        try:
            messages = json.loads(messages)
        except json.JSONDecodeError as exc:
            raise ExportRejected("bad_messages_json", str(exc)) from exc
    if not isinstance(messages, list) or not all(
        isinstance(m, dict) and isinstance(m.get("role"), str) for m in messages
    ):
        raise ExportRejected("bad_messages_json", "messages is not a list of chat messages")
    values["messages"] = messages
    try:
        return Trajectory.model_validate(values)
    except ValueError as exc:
        raise ExportRejected("bad_trajectory_record", str(exc)[:300]) from exc


def tool_parameters(tools: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Exposed tool name -> its JSON schema, from OpenAI-style tool entries."""
    found = {}
    for tool in tools:
        function = tool.get("function", tool)
        if isinstance(function, dict) and function.get("name"):
            found[function["name"]] = function.get("parameters") or {"type": "object"}
    return found


def check_tool_calls(messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> None:
    """Raise ExportRejected unless every call names an available tool with valid arguments."""
    schemas = tool_parameters(tools)
    for call in iter_tool_calls(messages):
        name = call.get("name", "")
        if name not in schemas:
            raise ExportRejected("unknown_tool", name)
        try:
            arguments = parse_arguments(call.get("arguments"))
        except json.JSONDecodeError as exc:
            raise ExportRejected("unparseable_tool_arguments", name) from exc
        checked, problem = check_instance(schemas[name], arguments)
        if not checked:
            raise ExportRejected("invalid_tool_schema", f"{name}: {problem}")
        if problem is not None:
            raise ExportRejected("invalid_tool_arguments", f"{name}: {problem[:200]}")


def question_assessment(rating: TaskRating | None) -> dict[str, Any]:
    if rating is None:
        return {}
    assessment: dict[str, Any] = {
        name: score.model_dump() for name, score in sorted(rating.scores.items())
    }
    assessment["overall_score"] = rating.overall
    assessment["judge"] = rating.judge
    return assessment


def response_assessment(rating: TrajectoryRating) -> dict[str, Any]:
    assessment: dict[str, Any] = {
        name: score.model_dump() for name, score in sorted(rating.scores.items())
    }
    assessment["overall_score"] = rating.overall
    for key, value in rating.tool_accuracy.items():
        assessment[TOOL_ACCURACY_NAMES.get(key, key)] = value
    assessment["flags"] = {name: fired for name, fired in rating.flags.items() if fired}
    assessment["judge"] = rating.judge
    return assessment


def exported_task_metadata(task: Task) -> dict[str, Any]:
    """The task's metadata as exports have carried it: with the generator reply's accounting
    under the keys it had there before it became the row's own fields (only when a reply
    made the task), so a dataset's `task_metadata` keeps its shape."""
    if task.deployment is None:
        return task.metadata
    return task.metadata | {
        "deployment": task.deployment,
        "tokens_in": task.usage.prompt_tokens,
        "tokens_out": task.usage.completion_tokens,
        "cost_usd": task.cost_usd,
        "cached": task.cached,
    }


def row_metadata(source: ExportSource) -> dict[str, Any]:
    trajectory, task = source.trajectory, source.task
    return {
        "task_id": task.task_id,
        "trajectory_id": trajectory.trajectory_id,
        "parent_task_id": task.parent_id,
        "parent_trajectory_id": trajectory.parent_id,
        "task_kind": task.kind,
        "strategy": task.strategy,
        "generator": task.generator,
        "teacher": trajectory.teacher,
        **provenance_metadata(task, trajectory, source.trajectory_rating, source.task_rating),
        "style": trajectory.style,
        "mcp_servers": [
            {
                "server_id": s.server_id,
                "name": s.name,
                "domain": s.domain,
                "license": s.license,
                "description": s.description,
            }
            for s in source.servers
        ],
        "tool_name_map": trajectory.tool_name_map,
        "schema_hashes": trajectory.schema_hashes,
        "turns": trajectory.turns,
        "tool_calls": trajectory.tool_calls,
        "tool_errors": trajectory.tool_errors,
        "requested_turns": trajectory.requested_turns,
        "completed_turns": trajectory.completed_turns,
        "stop_reason": trajectory.stop_reason,
        "usage": trajectory.usage.model_dump(),
        "cost_usd": trajectory.cost_usd,
        "prompt_hashes": {"task": task.prompt_hash, "trajectory": trajectory.prompt_hash},
        "task_metadata": exported_task_metadata(task),
        "trajectory_metadata": trajectory.metadata,
    }


def build_export_row(source: ExportSource, scrubber: Scrubber) -> ExportRow:
    """Scrub, validate and encode one kept trajectory. Raises ExportRejected."""
    trajectory = source.trajectory
    if trajectory.kind not in SUBSET_BY_KIND:
        raise ExportRejected("unknown_kind", trajectory.kind)
    messages = scrubber.scrub_value(trajectory.messages)
    tools = scrubber.scrub_value(trajectory.tools)
    check_tool_calls(messages, tools)
    return ExportRow(
        uuid=export_uuid(trajectory.trajectory_id),
        subset_name=SUBSET_BY_KIND[trajectory.kind],
        messages=dumps(messages),
        question=scrubber.scrub_text(source.task.question),
        available_tools=dumps(tools),
        target_tools=",".join(t.tool for t in source.task.target_tools),
        question_quality_assessment=dumps(
            scrubber.scrub_value(question_assessment(source.task_rating))
        ),
        response_quality_assessment=dumps(
            scrubber.scrub_value(response_assessment(source.trajectory_rating))
        ),
        metadata=dumps(scrubber.scrub_value(row_metadata(source))),
    )


def build_export_chunk(
    chunk: tuple[str, str], sources: list[ExportSource], unreadable: dict[str, str]
) -> ExportBatch:
    """Rows for the kept trajectories of ids `chunk` (first, last), read as `sources`; the
    ones that could not be read (`unreadable`: trajectory id -> reason) are counted as
    rejected with the others."""
    batch = build_export_rows(sources)
    for trajectory_id, reason in unreadable.items():
        batch.excluded[reason] = batch.excluded.get(reason, 0) + 1
        batch.rejected[trajectory_id] = reason
    return batch


def build_export_rows(sources: list[ExportSource]) -> ExportBatch:
    """Rows for a batch; a rejected source is counted by reason, the rest go on."""
    batch = ExportBatch()
    excluded: Counter[str] = Counter()
    scrubbed: Counter[str] = Counter()
    scrubbed_rows: Counter[str] = Counter()
    for source in sources:
        scrubber = Scrubber()
        try:
            batch.rows.append(build_export_row(source, scrubber))
        except ExportRejected as exc:
            excluded[exc.reason] += 1
            batch.rejected[source.trajectory.trajectory_id] = exc.reason
            continue
        if scrubber.counts:
            batch.rows_scrubbed += 1
            scrubbed.update(scrubber.counts)
            scrubbed_rows.update(scrubber.counts.keys())
    batch.excluded = dict(excluded)
    batch.scrubbed = dict(scrubbed)
    batch.scrubbed_rows = dict(scrubbed_rows)
    return batch


def plan_mix(available: dict[str, int], weights: dict[str, float]) -> dict[str, int]:
    """Rows per subset in the given proportions, scaled to what exists.

    The subset with the least rows per unit of weight is taken whole; the others are cut to
    its scale, rounded to the nearest row. Subsets with no rows (or no weight) are left out."""
    present = {s: n for s, n in available.items() if n > 0 and weights.get(s, 0) > 0}
    if not present:
        return {s: 0 for s in available}
    scale = min(n / weights[s] for s, n in present.items())
    return {
        s: (min(n, math.floor(weights[s] * scale + 0.5)) if s in present else 0)
        for s, n in available.items()
    }
