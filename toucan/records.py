"""One pydantic record per store table, declared once; the DuckDB schema is derived from these.

Structured fields (lists, dicts, nested models) are stored as JSON columns. Every record has a
deterministic primary key built with `toucan.ids.make_id`, so inserting the same record twice is
a no-op.

Provenance of model-made rows (tasks, ratings, trajectories, `llm_call` events): `served_by` is
the model that actually answered, as the provider's response names it (`gpt-4o-mini-2024-07-18`
for a call to `gpt-4o-mini`; for the embedded model, the GGUF its server loaded, e.g.
`SmolLM2-135M-Instruct`), whatever the deployment is called in the config; `served_by_embedded`
is True when the embedded local model (profile `local`) answered. A reply served from the cache
keeps the provenance of the call that produced it. Both are None on rows written before they
were recorded (the columns are added to old stores as NULL), or made without a model.

Accounting of the same rows: `deployment` is the configured deployment that answered (on
ratings, `judge`), `usage` the tokens of the reply (or replies) the row was made from, `cost_usd`
what they cost (0 for a reply served from toucan's cache) and `cached` whether the row's
replies all came from that cache (a re-run paid nothing for it). Stores written before these
were columns held them in `tasks.metadata` (tokens_in, tokens_out, cost_usd, deployment,
cached); toucan/store.py moves them over.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, computed_field, field_validator, model_validator

SNAKE_KEY = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)+$")


def utc_now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def protocol_annotations(annotations: Any) -> dict[str, Any]:
    """Tool annotations under their MCP protocol names (`readOnlyHint`, `destructiveHint`,
    `idempotentHint`, `openWorldHint`, `title`; MCP spec 2025-06-18, server/tools,
    ToolAnnotations). Stores written before this fix hold the SDK's Python names
    (`read_only_hint`); those are renamed here, on read. Anything but a mapping gives {}."""
    if not isinstance(annotations, dict):
        return {}
    renamed = {key: value for key, value in annotations.items() if not SNAKE_KEY.match(key)}
    for key, value in annotations.items():
        if SNAKE_KEY.match(key):
            head, *rest = key.split("_")
            renamed.setdefault(head + "".join(part.title() for part in rest), value)
    return renamed


class Usage(BaseModel):
    """Tokens a row's model replies took, under the OpenAI usage names; `total_tokens` is
    derived (prompt + completion). `server_request_tokens` (trajectories only) is what answering
    the MCP servers' sampling and elicitation requests took during tool calls: counted apart,
    as those are not the teacher's turns, and not in `total_tokens`."""

    model_config = ConfigDict(extra="forbid")

    prompt_tokens: int = 0
    completion_tokens: int = 0
    server_request_tokens: int = 0

    @model_validator(mode="before")
    @classmethod
    def _drop_stored_total(cls, value: Any) -> Any:
        # dumps (stored rows, cached replies) carry the derived total; it is computed again
        if isinstance(value, dict) and "total_tokens" in value:
            value = {key: item for key, item in value.items() if key != "total_tokens"}
        return value

    @computed_field  # type: ignore[prop-decorator]
    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class CallLog(BaseModel):
    """One executed tool call, as stored in `Trajectory.tool_call_log` (tasks/agent/toolbox.py
    writes it)."""

    model_config = ConfigDict(extra="forbid")

    call_id: str
    name: str  # the name the model called (the exposed name)
    server_id: str | None = None  # None: no such tool was offered
    server: str | None = None
    tool: str | None = None  # the server's own name of the tool
    arguments: dict[str, Any] = Field(default_factory=dict)
    started_ms: float = 0.0  # when the call started, ms after the trajectory's first call site
    latency_ms: float = 0.0
    is_error: bool = False
    error_reason: str | None = None
    schema_violation: str | None = None
    truncated: bool = False
    original_chars: int = 0
    replayed: bool = False
    call_key: str | None = None
    # tokens for a call that went through with something off: arguments_unchecked (the
    # schema could not be checked), or the result's note (e.g. output_schema_mismatch)
    notes: list[str] = Field(default_factory=list)
    server_requests: int = 0  # sampling/elicitation requests answered during the call


class Record(BaseModel):
    """Base of every table row. `__table__` names the table, `__key__` its primary key.

    `__indexed__ = False` marks an append-only table whose rows its writer makes once by
    construction: the key identifies a row but DuckDB keeps no primary-key index for it. The
    first write of each connection loads a table's whole index (ART) into memory, and a
    writing run reopens the file whenever a reader asks for it (toucan/store.py):
    measured on DuckDB 2.0.1, ~46-125 MB and 250-500 ms per 1M rows of 64-character keys,
    so the largest tables, written the most and never looked up by key, go without one."""

    model_config = ConfigDict(extra="forbid", validate_assignment=False)

    __table__: ClassVar[str]
    __key__: ClassVar[tuple[str, ...]]
    __indexed__: ClassVar[bool] = True


class Run(Record):
    __table__ = "runs"
    __key__ = ("run_id",)

    run_id: str
    stage: str
    # crashed: the process died without recording an end (`toucan status` and the next
    # writing run on the store find it gone: toucan/status.py)
    status: Literal["running", "completed", "failed", "interrupted", "crashed"] = "running"
    profile: str = "local"
    params: dict[str, Any] = Field(default_factory=dict)
    config_hash: str = ""
    started_at: datetime = Field(default_factory=utc_now)
    finished_at: datetime | None = None
    summary: dict[str, Any] = Field(default_factory=dict)
    prefect_flow_run_id: str | None = None
    pid: int | None = None
    # with the pid, which process ran it: a pid the system reused for another process is
    # told apart by its start time (naive UTC, like every timestamp here); None on old rows
    host: str | None = None
    process_started_at: datetime | None = None


class RunProgress(Record):
    """How far a running stage is, for readers in other processes (`toucan status`): written
    right after the run's plan, then at most every half second while items finish, and once
    more with the final counts (flows/live_progress.py). Events are written per batch; this
    row moves per item."""

    __table__ = "run_progress"
    __key__ = ("run_id",)

    run_id: str
    stage: str
    planned: int = 0  # items this run set out to do
    already_done: int = 0  # items earlier runs finished
    finished: int = 0  # items this run finished so far, failed ones included
    failed: int = 0  # of those, the ones that ended in an error row
    updated_at: datetime = Field(default_factory=utc_now)


class ToolRejection(BaseModel):
    """A tool a server listed that cannot be used; it is never offered to a model."""

    model_config = ConfigDict(extra="forbid")

    name: str
    reason: str  # snake_case token, e.g. invalid_input_schema
    detail: str = ""


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
    # how its process was confined when onboarded: bwrap, or helper (weaker: host files and
    # processes visible; mcp_env/confine.py); None when nothing of ours ran (remote, specs only)
    sandbox: str | None = None
    needs_credentials: list[str] = Field(default_factory=list)
    license: str | None = None
    usage_count: int = 0
    featured: bool = False
    catalog_path: str | None = None
    run_id: str | None = None
    onboarded_at: datetime = Field(default_factory=utc_now)
    # the transport the connection was made on (a URL-only or mis-declared spec may differ
    # from `transport`); None when not connected
    transport_used: str | None = None
    notes: list[str] = Field(default_factory=list)  # tokens, e.g. wrong_transport, stuck_cursor
    rejected_tools: list[ToolRejection] = Field(default_factory=list)  # listed, not usable


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
    repairs: list[str] = Field(default_factory=list)  # tokens, e.g. missing_root_type
    repair_detail: str = ""

    _protocol_annotations = field_validator("annotations", mode="before")(protocol_annotations)

    @model_validator(mode="after")
    def _read_only_from_annotations(self) -> Tool:
        # rows written before annotations kept their protocol names have read_only false
        self.read_only = self.read_only or self.annotations.get("readOnlyHint") is True
        return self


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
    served_by: str | None = None  # provenance of the generator's reply (module docstring)
    served_by_embedded: bool | None = None
    deployment: str | None = None  # accounting of that reply (module docstring)
    usage: Usage = Field(default_factory=Usage)
    cost_usd: float = 0.0
    cached: bool = False
    prompt_hash: str = ""
    seed: int = 0
    status: Literal["ok", "rejected", "error"] = "ok"
    reason: str | None = None
    # tries of this item so far, this row's included: a retryable error is tried again
    # until `retries.max_attempts`, then the item is given up (flows/queries.py)
    attempts: int = 1
    raw_reply: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    run_id: str | None = None
    created_at: datetime = Field(default_factory=utc_now)


class Score(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reasoning: str
    score: int


# the task judge's six scores (TaskRating.scores), in the order the judge writes them
TASK_SCORES: tuple[str, ...] = (
    "tool_selection_difficulty",
    "tool_selection_uniqueness",
    "question_quality",
    "scenario_realism",
    "verifiable",
    "stability",
)


class TaskRating(Record):
    __table__ = "task_ratings"
    __key__ = ("rating_id",)

    rating_id: str
    task_id: str
    judge: str  # the judge deployment that answered
    served_by: str | None = None  # provenance of the judge's reply (module docstring)
    served_by_embedded: bool | None = None
    usage: Usage = Field(default_factory=Usage)  # accounting of that reply (module docstring)
    cost_usd: float = 0.0
    cached: bool = False
    scores: dict[str, Score] = Field(default_factory=dict)  # TASK_SCORES
    overall: float | None = None
    keep: bool = False
    status: Literal["ok", "error"] = "ok"
    reason: str | None = None
    attempts: int = 1  # tries so far (see Task.attempts)
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
    teacher: str  # the teacher deployment planned for this row
    model: str = ""  # the LiteLLM model string actually called
    # the deployment(s) that answered and the model(s) that served them (module docstring);
    # several, joined by ", " in order of first use, when a fallback answered some turns
    deployment: str | None = None
    served_by: str | None = None
    served_by_embedded: bool | None = None
    style: str = "function-calling"  # a name in tasks/agent/styles.py's STYLES
    messages: list[dict[str, Any]] = Field(default_factory=list)  # OpenAI chat format
    tools: list[dict[str, Any]] = Field(default_factory=list)  # exactly as the model saw them
    # exposed name -> the server's own {name, description, inputSchema} of each offered tool
    # (`tools` holds them as made for the teacher's provider); empty on rows made before it
    original_tools: dict[str, dict[str, Any]] = Field(default_factory=dict)
    tool_name_map: dict[str, dict[str, str]] = Field(default_factory=dict)  # exposed -> server/tool
    schema_hashes: dict[str, str] = Field(default_factory=dict)
    turns: int = 0
    tool_calls: int = 0
    tool_errors: int = 0
    tool_call_log: list[CallLog] = Field(default_factory=list)
    # accounting (module docstring): the teacher's turns, plus what answering the servers'
    # requests took (`usage.server_request_tokens`, and in `cost_usd`)
    usage: Usage = Field(default_factory=Usage)
    cost_usd: float = 0.0
    cached: bool = False
    stop_reason: str = ""
    status: Literal["ok", "error"] = "ok"
    reason: str | None = None
    attempts: int = 1  # tries so far (see Task.attempts)
    requested_turns: int = 1
    completed_turns: int = 1
    prompt_hash: str = ""
    metadata: dict[str, Any] = Field(default_factory=dict)
    run_id: str | None = None
    started_at: datetime = Field(default_factory=utc_now)
    finished_at: datetime = Field(default_factory=utc_now)


# the trajectory judge's scores and the rule flags (tasks/trajectory_rules.py) of a rating
TRAJECTORY_SCORES: tuple[str, ...] = ("completeness", "conciseness")
TRAJECTORY_RULES: tuple[str, ...] = (
    "no_tool_call",
    "tool_called_on_irrelevant",
    "tool_execution_error",
    "empty_final_answer",
    "local_path_or_secret",
    "target_tool_not_called",
    "repeated_junk",
)


class TrajectoryRating(Record):
    __table__ = "trajectory_ratings"
    __key__ = ("rating_id",)

    rating_id: str
    trajectory_id: str
    judge: str  # the judge deployment that answered
    served_by: str | None = None  # provenance of the judge's reply (module docstring)
    served_by_embedded: bool | None = None
    usage: Usage = Field(default_factory=Usage)  # accounting of that reply (module docstring)
    cost_usd: float = 0.0
    cached: bool = False
    flags: dict[str, bool] = Field(default_factory=dict)  # TRAJECTORY_RULES; True = it fired
    scores: dict[str, Score] = Field(default_factory=dict)  # TRAJECTORY_SCORES
    overall: float | None = None
    tool_accuracy: dict[str, float] = Field(default_factory=dict)
    # what fired `local_path_or_secret`: occurrences by kind (tasks/secret_rules.toml)
    leaks: dict[str, int] = Field(default_factory=dict)
    keep: bool = False
    status: Literal["ok", "error"] = "ok"
    reason: str | None = None
    attempts: int = 1  # tries so far (see Task.attempts)
    raw_reply: str | None = None
    prompt_hash: str = ""
    run_id: str | None = None
    created_at: datetime = Field(default_factory=utc_now)


class Event(Record):
    """One unit of work or one external call: the throughput and cost ledger."""

    __table__ = "events"
    __key__ = ("event_id",)
    # two or more rows per item, never looked up by id; an id names its run and sequence
    # number (toucan/events.py), and each event is written once, when its sink is drained
    __indexed__ = False

    event_id: str
    run_id: str
    stage: str
    # sampling / elicitation: a server's request answered during a tool call
    kind: Literal["item", "llm_call", "tool_call", "connect", "sampling", "elicitation"] = "item"
    item_id: str | None = None
    server: str | None = None
    model: str | None = None  # the deployment name
    served_by: str | None = None  # llm_call: the model that served it (module docstring)
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


BatchStatus = Literal[
    "submitting",  # recorded, not yet accepted by the provider (no job id, or not known yet)
    "validating",
    "in_progress",
    "finalizing",
    "cancelling",
    "completed",
    "failed",
    "expired",
    "cancelled",
]


class BatchJob(Record):
    """One provider batch job (OpenAI Batch API, Anthropic Message Batches).

    Written before the job is created and again whenever its state changes, so a killed run
    finds it and waits for it instead of paying for it twice. `status` is the provider's, in
    the OpenAI Batch object's names, or `submitting`; `reason` is a token when it ended short
    (`batch_expired`, `batch_failed`, `batch_timeout`, `batch_cancelled`,
    `batch_submit_failed`, `batch_lost`).
    """

    __table__ = "batch_jobs"
    __key__ = ("job_key",)

    job_key: str  # make_id("batch", deployment, custom ids, attempt): ours, known before submit
    job_id: str | None = None  # the provider's batch id, once it accepted the job
    provider: Literal["openai", "anthropic"]
    deployment: str
    model: str  # the LiteLLM model string of the deployment
    stage: str
    run_id: str
    status: BatchStatus = "submitting"
    attempt: int = 0  # 0 = first submission; n = the n-th resubmission of unfinished items
    resubmit_of: str | None = None  # job_key of the expired/failed job these items came from
    input_file_id: str | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    request_count: int = 0
    completed_count: int = 0  # provider's request_counts, as last seen
    failed_count: int = 0
    reason: str | None = None
    detail: str = ""
    submitted_at: datetime = Field(default_factory=utc_now)
    checked_at: datetime | None = None
    ended_at: datetime | None = None


class BatchRequest(Record):
    """One line of a batch job: which item its answer belongs to (the request id -> item id
    map), written with the job before it is submitted."""

    __table__ = "batch_requests"
    __key__ = ("job_key", "custom_id")

    job_key: str
    custom_id: str  # the line's id at the provider
    item_id: str
    request_key: str  # the response cache key of the request (deployment, model, prompt, params)
    deployment: str
    stage: str
    run_id: str
    created_at: datetime = Field(default_factory=utc_now)


class DedupIndexEntry(Record):
    """A kept task in the near-duplicate index: its LSH band keys (`tasks.dedup.band_keys`),
    so a new task finds its candidates by a join on band keys instead of reading every task.
    Rows whose `scheme` differs from the current one (other LSH parameters or threshold) are
    deleted and rebuilt by the next pass; a task with no row is new to the pass."""

    __table__ = "dedup_index"
    __key__ = ("task_id",)
    # read by joins on band keys, written only for tasks it does not hold (flows/dedup.py)
    __indexed__ = False

    task_id: str
    scheme: str
    band_keys: list[int] = Field(default_factory=list)  # BANDS signed 64-bit keys


TABLES: tuple[type[Record], ...] = (
    Run,
    RunProgress,
    Server,
    Tool,
    Task,
    TaskRating,
    Trajectory,
    TrajectoryRating,
    Event,
    LlmCacheEntry,
    ToolCallRecord,
    BatchJob,
    BatchRequest,
    DedupIndexEntry,
)
