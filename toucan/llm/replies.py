"""What a model call takes besides the messages, and what it gives back."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class CallMeta(BaseModel):
    """Who asked: lands on the call's event row (run, stage, server, item)."""

    model_config = ConfigDict(frozen=True)

    run_id: str = "adhoc"
    stage: str = "adhoc"
    server_id: str | None = None
    item_id: str | None = None


class ToolCall(BaseModel):
    id: str
    name: str
    arguments: str  # the raw JSON text the model wrote; `parsed_arguments()` decodes it

    def parsed_arguments(self) -> dict[str, Any]:
        """The arguments as a dict; {} when the model wrote no or invalid JSON."""
        try:
            value = json.loads(self.arguments or "{}")
        except json.JSONDecodeError:
            return {}
        return value if isinstance(value, dict) else {}


class Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class LlmReply(BaseModel):
    """One model answer, normalised across providers."""

    text: str = ""
    tool_calls: list[ToolCall] = Field(default_factory=list)
    finish_reason: str | None = None
    usage: Usage = Field(default_factory=Usage)
    cost_usd: float = 0.0
    latency_ms: float = 0.0
    deployment: str  # the configured deployment name, e.g. "Qwen2-72B-Instruct"
    model: str  # the LiteLLM model string it was served by
    cached: bool = False
