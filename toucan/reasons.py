"""Which error reasons are worth another attempt and which are a final answer.

A row with a retryable reason counts as unfinished: the next run of its stage selects it
again, and the pipeline's completeness check counts it as pending. Every other reason is
final (a rejection, an unparseable or out-of-range reply the reply cache would only repeat,
a tool that does not exist). One table for every stage, so a retry policy (attempts, backoff)
has one place to read.
"""

from __future__ import annotations

from typing import Literal

from toucan.errors import RETRYABLE_REASONS

Disposition = Literal["retryable", "final"]

# The model layer's transient failures (toucan/llm/errors.py): the provider may answer later;
# and the calls a run's guards did not send (an outage, a budget cap): the next run may
LLM_RETRYABLE = RETRYABLE_REASONS
# An MCP server that did not come up in time or died may come up the second time.
MCP_RETRYABLE = frozenset(
    {"initialize_timeout", "connect_timeout", "server_crashed", "crashed_at_start"}
)
RETRYABLE = LLM_RETRYABLE | MCP_RETRYABLE


def disposition(reason: str | None) -> Disposition:
    """`retryable` for a reason in RETRYABLE, else `final` (None, an unknown token included)."""
    return "retryable" if reason in RETRYABLE else "final"
