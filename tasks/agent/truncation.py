"""Cut large tool results to a token budget, with a visible marker and the original size kept.

Tokens are estimated at CHARS_PER_TOKEN characters each: exact tokenizers differ per teacher
and cost milliseconds per call, while the budget only needs to keep contexts bounded.
"""

from __future__ import annotations

from mcp_env.results import ToolResult

CHARS_PER_TOKEN = 4


def estimate_tokens(text: str) -> int:
    return (len(text) + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN


def truncate_to_budget(result: ToolResult, token_budget: int) -> ToolResult:
    """The result unchanged when it fits, else its head plus a marker naming the full size."""
    original_chars = max(result.original_chars, len(result.text))
    max_chars = max(0, token_budget) * CHARS_PER_TOKEN
    if len(result.text) <= max_chars:
        return result.model_copy(update={"original_chars": original_chars})
    marker = (
        f"\n...[truncated by toucan: the tool returned {original_chars} characters "
        f"(~{estimate_tokens(result.text)} tokens); showing the first {max_chars}]"
    )
    return result.model_copy(
        update={
            "text": result.text[:max_chars] + marker,
            "truncated": True,
            "original_chars": original_chars,
        }
    )
