"""Requests a server sends us while it serves a tool call: sampling and elicitation.

MCP lets a server ask its client for a model completion (`sampling/createMessage`, spec
2025-06-18, "Client features > Sampling") or for input from the user (`elicitation/create`,
"Client features > Elicitation"). The session (mcp_env/client_callbacks.py) turns the SDK's
params into the records here and hands them to a `ServerRequestHandler`: the one of the tool
call in flight (a trajectory's, tasks/agent/server_requests.py), else the session's fallback,
`PolicyHandler`, which answers without a model. Every exchange becomes a `ServerExchange`.
"""

from __future__ import annotations

import logging
from typing import Any, Literal, Protocol

from pydantic import BaseModel, Field

from toucan.errors import McpError

logger = logging.getLogger(__name__)

ElicitationPolicy = Literal["simulated_user", "accept_defaults", "decline"]
ElicitationAction = Literal["accept", "decline", "cancel"]


class SamplingRequest(BaseModel):
    """A `sampling/createMessage` request in the model layer's terms."""

    messages: list[dict[str, Any]]  # OpenAI chat format; the server's systemPrompt first
    max_tokens: int  # the request's maxTokens
    temperature: float | None = None
    stop: list[str] = Field(default_factory=list)  # stopSequences
    model_hints: list[str] = Field(default_factory=list)  # modelPreferences.hints[].name


class SamplingReply(BaseModel):
    """What answers a sampling request, and what it cost."""

    text: str
    model: str  # the model that wrote it (the result's `model` field)
    answered_by: str  # the configured deployment
    stop_reason: str | None = None  # endTurn | maxTokens | stopSequence
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0


class ElicitationRequest(BaseModel):
    """An `elicitation/create` request: a form (flat JSON schema) or a URL to visit."""

    mode: Literal["form", "url"] = "form"
    message: str
    requested_schema: dict[str, Any] = Field(default_factory=dict)
    url: str | None = None


class ElicitationReply(BaseModel):
    """The user's answer. `error_reason` says why it is a fallback answer, when it is one."""

    action: ElicitationAction
    content: dict[str, Any] | None = None  # only with `accept`
    answered_by: str  # the policy, or the deployment that played the user
    error_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0


class ServerExchange(BaseModel):
    """One server request and our answer, as stored in a trajectory's `metadata`."""

    kind: Literal["sampling", "elicitation"]
    server_id: str
    server: str
    call_id: str | None = None  # the tool call it arrived during (set by the trajectory)
    request: dict[str, Any]  # the params as the server sent them (wire names)
    response: dict[str, Any] | None = None  # what we answered (wire names); None = an error
    error_reason: str | None = None
    answered_by: str = ""
    # our tool calls in flight on that session when it arrived: 1 = it surely belongs to
    # `call_id`; more = stdio carries no link, so it went to the oldest of them
    in_flight: int = 0
    latency_ms: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    replayed: bool = False  # restored from a recorded call on resume, not asked again


class ServerRequestHandler(Protocol):
    """Answers the server requests that arrive during a tool call.

    `sample` / `elicit` raise McpError (with a reason token) to refuse; the server then gets a
    JSON-RPC error. `record` receives every exchange, answered or refused.
    """

    async def sample(self, request: SamplingRequest) -> SamplingReply: ...

    async def elicit(self, request: ElicitationRequest) -> ElicitationReply: ...

    def record(self, exchange: ServerExchange) -> None: ...


def schema_defaults(schema: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """(the `default` of every property that has one, required properties without one).

    Elicitation schemas are flat objects of primitive properties (spec: "Requested schema"),
    so only top-level properties are read."""
    properties = schema.get("properties") if isinstance(schema, dict) else None
    properties = properties if isinstance(properties, dict) else {}
    defaults = {
        name: spec["default"]
        for name, spec in properties.items()
        if isinstance(spec, dict) and "default" in spec
    }
    required = schema.get("required") if isinstance(schema.get("required"), list) else []
    missing = [name for name in required if name not in defaults]
    return defaults, missing


def answer_by_policy(policy: ElicitationPolicy, request: ElicitationRequest) -> ElicitationReply:
    """The answer of a policy that needs no model. `simulated_user` (which does) and URL mode
    (nobody can visit the page) decline; `accept_defaults` declines when a required field has
    no default, since accepting would send the server an invalid form."""
    if request.mode == "url":
        return ElicitationReply(
            action="decline", answered_by=policy, error_reason="url_elicitation_unsupported"
        )
    if policy == "accept_defaults":
        content, missing = schema_defaults(request.requested_schema)
        if missing:
            return ElicitationReply(
                action="decline", answered_by=policy, error_reason="no_default_for_required"
            )
        return ElicitationReply(action="accept", content=content, answered_by=policy)
    reason = "no_simulated_user" if policy == "simulated_user" else None
    return ElicitationReply(action="decline", answered_by=policy, error_reason=reason)


class PolicyHandler:
    """The fallback outside a trajectory (onboarding health checks, bare sessions): sampling is
    refused at once (there is no model to charge it to), elicitation is answered by `policy`
    without a model. Exchanges are logged, not stored."""

    def __init__(self, policy: ElicitationPolicy = "decline") -> None:
        self.policy = policy

    async def sample(self, request: SamplingRequest) -> SamplingReply:
        raise McpError(
            "toucan answers sampling only inside a trajectory", reason="sampling_unavailable"
        )

    async def elicit(self, request: ElicitationRequest) -> ElicitationReply:
        return answer_by_policy(self.policy, request)

    def record(self, exchange: ServerExchange) -> None:
        logger.info(
            "%s asked for %s outside a trajectory: %s",
            exchange.server,
            exchange.kind,
            exchange.error_reason or (exchange.response or {}).get("action", "answered"),
        )
