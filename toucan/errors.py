"""Exception tree of toucan; every error we raise descends from ToucanError.

    ToucanError
    ├── ConfigError            bad settings file, unknown profile, missing key
    ├── StoreError             DuckDB store problems
    │   └── StoreLocked        another process holds the store for writing
    ├── CatalogError           a catalog file or entry that cannot be read
    ├── McpError               anything on the MCP side
    │   ├── ServerStartError   the server process or connection did not come up
    │   ├── ServerCrashed      the session died while in use
    │   ├── ToolTimeout        a tool call took longer than its budget
    │   └── ToolListError      list_tools failed or returned junk
    └── LlmError               anything on the model side
        ├── RateLimited        429s that outlasted the retries
        ├── ModelTimeout       the model did not answer in time
        ├── UnparseableReply   the reply did not parse into the expected record
        ├── BudgetExhausted    the call would cross a `budget` cap: not sent
        └── ModelGroupDown     no live deployment left for the call: not sent

Each class carries a stable snake_case `reason` token; rows store that token, and
`toucan status` counts by it. `RETRYABLE_REASONS` are the tokens worth another attempt on a
later run (the cause may pass: a provider outage, a crashed server, a raised cap); any other is
a final answer. The table covers the reasons of every stage's rows, not only these classes.
"""

from __future__ import annotations

from typing import Literal


class ToucanError(Exception):
    reason = "error"

    def __init__(self, message: str = "", *, reason: str | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason


class ConfigError(ToucanError):
    reason = "bad_config"


class StoreError(ToucanError):
    reason = "store_error"


class StoreLocked(StoreError):
    reason = "store_locked"


class CatalogError(ToucanError):
    reason = "bad_catalog"


class McpError(ToucanError):
    reason = "mcp_error"


class ServerStartError(McpError):
    reason = "server_start_failed"


class ServerCrashed(McpError):
    reason = "server_crashed"


class ToolTimeout(McpError):
    reason = "tool_timeout"


class ToolListError(McpError):
    reason = "bad_tool_list"


class LlmError(ToucanError):
    reason = "llm_error"


class RateLimited(LlmError):
    reason = "rate_limited"


class ModelTimeout(LlmError):
    reason = "model_timeout"


class BudgetExhausted(LlmError):
    """The call's reservation would cross a budget cap; nothing was sent. `scope` is the cap
    that stopped it: "run", "stage" or "deployment" (only then may a fallback answer)."""

    reason = "budget_exhausted"

    def __init__(self, message: str = "", *, scope: str = "run") -> None:
        super().__init__(message)
        self.scope = scope


class ModelGroupDown(LlmError):
    """Every deployment that could answer the call is paused by the circuit breaker."""

    reason = "model_unavailable"


class UnparseableReply(LlmError):
    reason = "unparseable_reply"

    def __init__(self, message: str = "", *, raw: str = "", reason: str | None = None) -> None:
        super().__init__(message, reason=reason)
        self.raw = raw


# -- which reasons are worth another attempt ------------------------------------------------
# A row whose reason is retryable counts as unfinished: the next run of its stage selects it
# again (up to `retries.max_attempts` tries, counted on the row), and the pipeline counts it as
# pending. Every other reason is final: a rejection, an unparseable or out-of-range reply the
# reply cache would only repeat, a tool that does not exist. One table for every stage.

# The model side: the provider may answer later (5xx, 429s, timeouts; toucan/llm/errors.py),
# `internal_error` is the stage edge's catch-all (a bug that a fix and a re-run cure).
LLM_RETRYABLE = frozenset(
    {
        RateLimited.reason,
        ModelTimeout.reason,
        "model_server_error",
        LlmError.reason,
        "internal_error",
        BudgetExhausted.reason,  # a raised cap lets it through
        ModelGroupDown.reason,  # the outage passes
    }
)
# An MCP server that did not come up in time, died, or was paused by the circuit breaker may
# come up the second time (onboarding also retries these within its run: tasks/onboard.py).
MCP_RETRYABLE = frozenset(
    {
        "initialize_timeout",
        "connect_timeout",
        "crashed_at_start",
        ServerStartError.reason,
        ServerCrashed.reason,
        McpError.reason,
        "server_died",
        "server_paused",
        "server_unavailable",
        "list_tools_timeout",
    }
)
# A provider batch job that did not give a line its answer (toucan/llm/batch_lines.py and
# batch_jobs.py): the line is sent again, online or in the next job. A line the provider
# answered with an error (`batch_request_failed`, mostly a 4xx) is final, as online.
BATCH_RETRYABLE = frozenset(
    {
        "batch_malformed_line",
        "batch_output_missing",
        "batch_missing_result",
        "batch_expired",
        "batch_cancelled",
        "batch_failed",
        "batch_timeout",
        "batch_lost",
        "batch_unreachable",
        "batch_submit_failed",
        "batch_not_submitted",
    }
)
RETRYABLE_REASONS = LLM_RETRYABLE | MCP_RETRYABLE | BATCH_RETRYABLE

Disposition = Literal["retryable", "final"]


def disposition(reason: str | None) -> Disposition:
    """`retryable` for a reason in RETRYABLE_REASONS, else `final` (None and unknown tokens
    included: an unknown reason is never retried blindly)."""
    return "retryable" if reason in RETRYABLE_REASONS else "final"


def error_row_fields(error: Exception) -> dict[str, str | None]:
    """What a row records of the failure that ended its item (the stage edge): status
    `error`, the reason token of a model-side error (`internal_error` for anything else) and,
    when the reply did not parse, the raw reply."""
    return {
        "status": "error",
        "reason": error.reason if isinstance(error, LlmError) else "internal_error",
        "raw_reply": error.raw if isinstance(error, UnparseableReply) else None,
    }
