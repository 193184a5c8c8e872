"""One pydantic record per store table, declared once; the DuckDB schema is derived from these.

Structured fields (lists, dicts, nested models) are stored as JSON columns. Every record has a
deterministic primary key built with `toucan.ids.make_id`, so inserting the same record twice is
a no-op.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field


def utc_now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


class Record(BaseModel):
    """Base of every table row. `__table__` names the table, `__key__` its primary key."""

    model_config = ConfigDict(extra="forbid", validate_assignment=False)

    __table__: ClassVar[str]
    __key__: ClassVar[tuple[str, ...]]


class Run(Record):
    __table__ = "runs"
    __key__ = ("run_id",)

    run_id: str
    stage: str
    status: Literal["running", "completed", "failed", "interrupted"] = "running"
    profile: str = "local"
    params: dict[str, Any] = Field(default_factory=dict)
    config_hash: str = ""
    started_at: datetime = Field(default_factory=utc_now)
    finished_at: datetime | None = None
    summary: dict[str, Any] = Field(default_factory=dict)
    prefect_flow_run_id: str | None = None
    pid: int | None = None


class Server(Record):
    __table__ = "servers"
    __key__ = ("server_id",)

    server_id: str
    name: str
    source: str  # fleet | yaml | smithery
    transport: str
    status: Literal["ok", "rejected", "specs_only"]
    reason: str | None = None  # snake_case token when rejected
    detail: str | None = None  # human message behind the reason
    domain: str | None = None
    domain_source: Literal["catalog", "judge", "keyword", "none"] = "none"
    secondary_domains: list[str] = Field(default_factory=list)
    description: str = ""
    spec: dict[str, Any] = Field(default_factory=dict)
    tool_count: int = 0
    connect_latency_ms: float | None = None
    needs_credentials: list[str] = Field(default_factory=list)
    license: str | None = None
    usage_count: int = 0
    featured: bool = False
    catalog_path: str | None = None
    run_id: str | None = None
    onboarded_at: datetime = Field(default_factory=utc_now)


class Tool(Record):
    __table__ = "tools"
    __key__ = ("tool_id",)

    tool_id: str  # make_id("tool", server_id, name, schema_hash): a changed schema is a new row
    server_id: str
    name: str
    description: str = ""
    input_schema: dict[str, Any] = Field(default_factory=dict)
    annotations: dict[str, Any] = Field(default_factory=dict)
    schema_hash: str
    version: int = 1
    read_only: bool = False
    current: bool = True  # False once a newer schema version of the same tool was seen
    first_seen_run: str | None = None
    first_seen_at: datetime = Field(default_factory=utc_now)


class TargetTool(BaseModel):
    model_config = ConfigDict(extra="forbid")

    server_id: str
    server: str
    tool: str


class Task(Record):
    __table__ = "tasks"
    __key__ = ("task_id",)

    task_id: str
    kind: Literal["original", "irrelevant", "diversified", "multi_turn_split"] = "original"
    parent_id: str | None = None
    strategy: str  # single_server | multi_server | featured
    question: str = ""
    target_tools: list[TargetTool] = Field(default_factory=list)
    server_ids: list[str] = Field(default_factory=list)
    generator: str = ""
    prompt_hash: str = ""
    seed: int = 0
    status: Literal["ok", "rejected", "error"] = "ok"
    reason: str | None = None
    raw_reply: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    run_id: str | None = None
    created_at: datetime = Field(default_factory=utc_now)


class Score(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reasoning: str
    score: int


class TaskRating(Record):
    __table__ = "task_ratings"
    __key__ = ("rating_id",)

    rating_id: str
    task_id: str
    judge: str
    scores: dict[str, Score] = Field(default_factory=dict)  # the six dimensions
    overall: float | None = None
    keep: bool = False
    status: Literal["ok", "error"] = "ok"
    reason: str | None = None
    raw_reply: str | None = None
    prompt_hash: str = ""
    run_id: str | None = None
    created_at: datetime = Field(default_factory=utc_now)


class Trajectory(Record):
    __table__ = "trajectories"
    __key__ = ("trajectory_id",)

    trajectory_id: str
    task_id: str
    kind: Literal["original", "irrelevant", "diversified", "multi_turn"] = "original"
    parent_id: str | None = None
    teacher: str
    model: str = ""  # the LiteLLM model string actually called
    style: Literal["function-calling", "react", "langchain"] = "function-calling"
    messages: list[dict[str, Any]] = Field(default_factory=list)  # OpenAI chat format
    tools: list[dict[str, Any]] = Field(default_factory=list)  # exactly as the model saw them
    tool_name_map: dict[str, dict[str, str]] = Field(default_factory=dict)  # exposed -> server/tool
    schema_hashes: dict[str, str] = Field(default_factory=dict)
    turns: int = 0
    tool_calls: int = 0
    tool_errors: int = 0
    tool_call_log: list[dict[str, Any]] = Field(default_factory=list)  # per call latency, error
    usage: dict[str, int] = Field(default_factory=dict)
    cost_usd: float = 0.0
    stop_reason: str = ""
    status: Literal["ok", "error"] = "ok"
    reason: str | None = None
    requested_turns: int = 1
    completed_turns: int = 1
    prompt_hash: str = ""
    metadata: dict[str, Any] = Field(default_factory=dict)
    run_id: str | None = None
    started_at: datetime = Field(default_factory=utc_now)
    finished_at: datetime = Field(default_factory=utc_now)


class TrajectoryRating(Record):
    __table__ = "trajectory_ratings"
    __key__ = ("rating_id",)

    rating_id: str
    trajectory_id: str
    judge: str
    flags: dict[str, bool] = Field(default_factory=dict)  # one per rule; True = rule fired
    scores: dict[str, Score] = Field(default_factory=dict)  # completeness, conciseness
    overall: float | None = None
    tool_accuracy: dict[str, float] = Field(default_factory=dict)
    keep: bool = False
    status: Literal["ok", "error"] = "ok"
    reason: str | None = None
    raw_reply: str | None = None
    prompt_hash: str = ""
    run_id: str | None = None
    created_at: datetime = Field(default_factory=utc_now)


class Event(Record):
    """One unit of work or one external call: the throughput and cost ledger."""

    __table__ = "events"
    __key__ = ("event_id",)

    event_id: str
    run_id: str
    stage: str
    kind: Literal["item", "llm_call", "tool_call", "connect"] = "item"
    item_id: str | None = None
    server: str | None = None
    model: str | None = None
    status: str = "ok"  # ok | error | rejected | cached | skipped
    error_class: str | None = None
    error: str | None = None
    started_at: datetime = Field(default_factory=utc_now)
    ended_at: datetime = Field(default_factory=utc_now)
    latency_ms: float = 0.0
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0


class LlmCacheEntry(Record):
    """A successful model reply, keyed by (model, rendered prompt hash, parameters)."""

    __table__ = "llm_cache"
    __key__ = ("cache_key",)

    cache_key: str
    model: str
    prompt_hash: str
    params_hash: str
    reply: dict[str, Any] = Field(default_factory=dict)
    run_id: str | None = None
    created_at: datetime = Field(default_factory=utc_now)


class ToolCallRecord(Record):
    """(server, tool, schema hash, arguments) -> result, replayed when a trajectory is redone."""

    __table__ = "tool_calls"
    __key__ = ("call_key",)

    call_key: str
    server_id: str
    tool: str
    schema_hash: str
    arguments: dict[str, Any] = Field(default_factory=dict)
    result: dict[str, Any] = Field(default_factory=dict)
    trajectory_id: str | None = None
    run_id: str | None = None
    created_at: datetime = Field(default_factory=utc_now)


class DedupIndexEntry(Record):
    """A kept task in the near-duplicate index: its LSH band keys (`tasks.dedup.band_keys`),
    so a new task finds its candidates by a join on band keys instead of reading every task.
    Rows whose `scheme` differs from the current one (other LSH parameters or threshold) are
    deleted and rebuilt by the next pass; a task with no row is new to the pass."""

    __table__ = "dedup_index"
    __key__ = ("task_id",)

    task_id: str
    scheme: str
    band_keys: list[int] = Field(default_factory=list)  # BANDS signed 64-bit keys


TABLES: tuple[type[Record], ...] = (
    Run,
    Server,
    Tool,
    Task,
    TaskRating,
    Trajectory,
    TrajectoryRating,
    Event,
    LlmCacheEntry,
    ToolCallRecord,
    DedupIndexEntry,
)
