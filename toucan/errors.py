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
    │   ├── JunkReply          the server answered a call with something not JSON-RPC
    │   └── ToolListError      list_tools failed or returned junk
    └── LlmError               anything on the model side
        ├── RateLimited        429s that outlasted the retries
        ├── ModelTimeout       the model did not answer in time
        ├── UnparseableReply   the reply did not parse into the expected record
        ├── BudgetExhausted    the call would cross a `budget` cap: not sent
        ├── PromptTooLarge     the prompt cannot fit the model's context window: not sent
        └── ModelGroupDown     no live deployment left for the call: not sent

Each class carries a stable snake_case `reason` token; rows store that token, and
`toucan status` counts by it. `RETRYABLE_REASONS` are the tokens worth another attempt on a
later run (the cause may pass: a provider outage, a raised cap); any other is a final answer.
"""

from __future__ import annotations


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


class JunkReply(McpError):
    """The server answered with junk: a reply that is not JSON-RPC, or no valid reply and
    junk on its output instead. The session stays usable; the server counts as failing."""

    reason = "junk_reply"


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


class PromptTooLarge(LlmError):
    """The prompt does not fit the deployment's context window; it was not sent, and sending
    it again would not help (a final answer)."""

    reason = "prompt_too_large"


class ModelGroupDown(LlmError):
    """Every deployment that could answer the call is paused by the circuit breaker."""

    reason = "model_unavailable"


class UnparseableReply(LlmError):
    reason = "unparseable_reply"

    def __init__(self, message: str = "", *, raw: str = "", reason: str | None = None) -> None:
        super().__init__(message, reason=reason)
        self.raw = raw


# Reasons worth another attempt on a later run; anything else is a final answer (a
# rejection, an unparseable or out-of-range reply the cache would only repeat).
RETRYABLE_REASONS = frozenset(
    {
        "rate_limited",
        "model_timeout",
        "model_server_error",
        "llm_error",
        "internal_error",
        BudgetExhausted.reason,
        ModelGroupDown.reason,
    }
)


def error_row_fields(error: Exception) -> dict[str, str | None]:
    """What a row records of the failure that ended its item (the stage edge): status
    `error`, the reason token of a model-side error (`internal_error` for anything else) and,
    when the reply did not parse, the raw reply."""
    return {
        "status": "error",
        "reason": error.reason if isinstance(error, LlmError) else "internal_error",
        "raw_reply": error.raw if isinstance(error, UnparseableReply) else None,
    }
