"""Turning LiteLLM/OpenAI exceptions into toucan's LlmError tree, and reading retry-after.

LlmError                  reason
├── RateLimited           rate_limited        429s that outlasted the patience budget
├── ModelTimeout          model_timeout       no answer within the deployment's timeout
├── UnparseableReply      unparseable_reply   reply did not parse after the repair retry
├── BudgetExhausted       budget_exhausted    the call would cross a budget cap: not sent
├── PromptTooLarge        prompt_too_large    the prompt cannot fit the context window: not sent
├── ModelGroupDown        model_unavailable   every deployment for the call is paused
└── (LlmError itself)     model_server_error  5xx / connection trouble after the retries
                          model_request_rejected  4xx other than 429: not retried

The OpenAI SDK's exceptions (what LiteLLM raises) are checked only when that SDK is loaded:
importing it costs ~1 s, and without it loaded no such exception can exist.
"""

from __future__ import annotations

import asyncio
import email.utils
import sys
import time
from typing import Any

from toucan.errors import (
    BudgetExhausted,
    LlmError,
    ModelGroupDown,
    ModelTimeout,
    RateLimited,
    UnparseableReply,
)

__all__ = [
    "BudgetExhausted",
    "ConnectionTrouble",
    "HttpStatusError",
    "LlmError",
    "ModelGroupDown",
    "ModelTimeout",
    "RateLimited",
    "UnparseableReply",
    "is_deployment_failure",
    "is_rate_limit",
    "is_retryable",
    "read_retry_after",
    "to_llm_error",
]


class HttpStatusError(Exception):
    """The direct transport's non-2xx reply (status, body excerpt, response headers)."""

    def __init__(self, status_code: int, body: str, headers: dict[str, str]) -> None:
        super().__init__(f"HTTP {status_code}: {body}")
        self.status_code = status_code
        self.headers = {key.lower(): value for key, value in headers.items()}


class ConnectionTrouble(Exception):
    """The direct transport could not get a usable reply (connection, payload): retried."""


RETRYABLE_STATUS = frozenset({408, 409, 425, 500, 502, 503, 504, 520, 522, 524, 529})
# the deployment itself is unusable (bad key, no access, no such model), whatever we send
BROKEN_DEPLOYMENT_STATUS = frozenset({401, 403, 404})


def openai_error(name: str) -> tuple[type[BaseException], ...]:
    """The OpenAI SDK's exception class `name` when the SDK is loaded, else ()."""
    sdk = sys.modules.get("openai")
    found = getattr(sdk, name, None) if sdk is not None else None
    return (found,) if isinstance(found, type) else ()


def is_rate_limit(error: BaseException) -> bool:
    return (
        isinstance(error, openai_error("RateLimitError"))
        or getattr(error, "status_code", None) == 429
    )


def is_timeout(error: BaseException) -> bool:
    return isinstance(error, (*openai_error("APITimeoutError"), asyncio.TimeoutError, TimeoutError))


def is_retryable(error: BaseException) -> bool:
    """Transient: timeouts, connection trouble, 5xx (429s have their own path)."""
    if is_timeout(error) or isinstance(
        error, (*openai_error("APIConnectionError"), ConnectionTrouble)
    ):
        return True
    status = getattr(error, "status_code", None)
    return status in RETRYABLE_STATUS or (isinstance(status, int) and status >= 500)


def is_deployment_failure(error: BaseException) -> bool:
    """A failure that says the deployment is down, not that this request was wrong: what the
    model circuit breaker counts (transient failures and 401/403/404; never a 429 or a
    rejected request)."""
    if is_rate_limit(error):
        return False
    return is_retryable(error) or getattr(error, "status_code", None) in BROKEN_DEPLOYMENT_STATUS


def read_retry_after(error: BaseException) -> float | None:
    """Seconds the server asked us to wait (retry-after / retry-after-ms headers), if any."""
    headers: Any = getattr(error, "litellm_response_headers", None) or getattr(
        error, "headers", None
    )
    response = getattr(error, "response", None)
    if headers is None and response is not None:
        headers = getattr(response, "headers", None)
    if not headers:
        return None
    milliseconds = headers.get("retry-after-ms")
    if milliseconds:
        try:
            return float(milliseconds) / 1000
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value)
        return max(0.0, parsed.timestamp() - time.time()) if parsed else None


def to_llm_error(error: BaseException, deployment: str) -> LlmError:
    """The toucan error for a failure that is final for this deployment."""
    message = f"{deployment}: {type(error).__name__}: {str(error)[:500]}"
    if isinstance(error, LlmError):
        return error
    if is_rate_limit(error):
        return RateLimited(message)
    if is_timeout(error):
        return ModelTimeout(message)
    if is_retryable(error):
        return LlmError(message, reason="model_server_error")
    return LlmError(message, reason="model_request_rejected")
