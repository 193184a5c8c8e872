"""What a model call takes besides the messages, and what it gives back."""

from __future__ import annotations

import json
from typing import Any, NamedTuple

from pydantic import BaseModel, ConfigDict, Field

from toucan.records import Usage


class CallMeta(BaseModel):
    """Who asked: lands on the call's event row (run, stage, server, item)."""

    model_config = ConfigDict(frozen=True)

    run_id: str = "adhoc"
    stage: str = "adhoc"
    server_id: str | None = None
    item_id: str | None = None


class LlmRequest(NamedTuple):
    """What a call asks, whichever deployment answers it: the request body each deployment is
    sent (`LlmRouter.build_request`) and the response cache key are made from it."""

    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None = None
    response_format: dict[str, Any] | None = None
    params: dict[str, Any] | None = None


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


class LlmReply(BaseModel):
    """One model answer, normalised across providers."""

    text: str = ""
    tool_calls: list[ToolCall] = Field(default_factory=list)
    finish_reason: str | None = None
    usage: Usage = Field(default_factory=Usage)
    cost_usd: float = 0.0
    latency_ms: float = 0.0
    deployment: str  # the configured deployment name, e.g. "Qwen2-72B-Instruct"
    model: str  # the LiteLLM model string asked for, e.g. "openai/gpt-4o-mini"
    # what actually answered: the `model` the provider put in its response (for the embedded
    # model, the name of the GGUF its server loaded); None = not reported, or a reply cached
    # before provenance was recorded. A cached reply keeps the provenance of its first call.
    served_by: str | None = None
    served_by_embedded: bool | None = None  # True = the embedded local model (profile `local`)
    cached: bool = False

    def row_fields(self) -> dict[str, Any]:
        """What a row made from this reply copies: its provenance (`served_by`,
        `served_by_embedded`) and accounting (`usage`, `cost_usd`, `cached`), under the same
        names on Task, TaskRating, Trajectory and TrajectoryRating (toucan/records.py). The
        deployment goes to `Task.deployment`, or to a rating's `judge`."""
        return {
            "served_by": self.served_by,
            "served_by_embedded": self.served_by_embedded,
            "usage": self.usage,
            "cost_usd": self.cost_usd,
            "cached": self.cached,
        }


def join_names(*names: str | None) -> str | None:
    """Distinct names in order of first use, joined by ", " (each argument may itself be such
    a join); None when there are none. A row made by several replies records every deployment
    and served model this way, e.g. after a fallback answered some turns."""
    seen = dict.fromkeys(
        part for name in names if name for part in name.split(", ") if part.strip()
    )
    return ", ".join(seen) or None


def any_embedded(*flags: bool | None) -> bool | None:
    """True when any reply came from the embedded model, None when none says either way."""
    known = [flag for flag in flags if flag is not None]
    return any(known) if known else None
