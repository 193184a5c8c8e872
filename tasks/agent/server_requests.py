"""A trajectory's answers to what its servers ask mid-call: sampling and elicitation.

Sampling goes to `mcp.sampling.model_group` (default: the trajectory's teacher) with the
request's own messages, systemPrompt, maxTokens, temperature and stopSequences; a
modelPreferences hint that names a deployment of that group picks it (spec 2025-06-18,
"Client features > Sampling > Model preferences": hints are substrings, first match wins).
Elicitation follows `mcp.elicitation.policy`: the simulated user (a model playing the user who
asked the task, prompts/trajectories/elicitation.j2), the schema's defaults, or decline.

Every exchange is kept in call order, tagged with its tool call's id, for the row's
`metadata.server_requests`; the model calls are ordinary router calls (cache, events, cost).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Literal

from mcp_env.server_requests import (
    ElicitationReply,
    ElicitationRequest,
    SamplingReply,
    SamplingRequest,
    ServerExchange,
    answer_by_policy,
)
from tasks.agent.loop import Teacher
from tasks.agent.toolbox import check_arguments
from toucan.config import McpConfig, ModelDeployment
from toucan.errors import LlmError, McpError
from toucan.llm.parsing import ModelReply
from toucan.llm.replies import CallMeta
from toucan.llm.router import GROUPS, LlmRouter
from toucan.llm.structured import complete_structured
from toucan.prompts import render

# OpenAI finish_reason -> MCP stopReason
STOP_REASONS = {"stop": "endTurn", "length": "maxTokens"}


class UserAnswer(ModelReply):
    """The simulated user's reply to an elicitation form."""

    action: Literal["accept", "decline", "cancel"]
    content: dict[str, Any] | None = None


def user_answer_format(requested_schema: dict[str, Any]) -> dict[str, Any]:
    """A response_format whose `content` is the server's own form schema."""
    form = requested_schema if requested_schema.get("type") == "object" else {"type": "object"}
    schema = {
        "type": "object",
        "properties": {
            "action": {"type": "string", "enum": ["accept", "decline", "cancel"]},
            "content": form,
        },
        "required": ["action"],
    }
    return {
        "type": "json_schema",
        "json_schema": {"name": "UserAnswer", "schema": schema, "strict": False},
    }


def match_model_hint(hints: Sequence[str], deployments: Sequence[ModelDeployment]) -> str | None:
    """The first deployment a hint names (case-insensitive substring of its name or model)."""
    for hint in hints:
        needle = hint.lower()
        for deployment in deployments:
            if needle in deployment.name.lower() or needle in deployment.model.lower():
                return deployment.name
    return None


class TrajectoryResponder:
    """Answers one trajectory's server requests; `for_call` binds one tool call."""

    def __init__(
        self,
        router: LlmRouter,
        teacher_name: str,
        meta: CallMeta,
        mcp: McpConfig,
        question: str,
        *,
        teacher: Teacher | None = None,
    ) -> None:
        self.router = router
        self.teacher = teacher or router  # the trajectory's model client (journaled)
        self.teacher_name = teacher_name
        self.meta = meta
        self.mcp = mcp
        self.question = question
        self.exchanges: list[ServerExchange] = []

    def for_call(self, call_id: str | None, *, keep: bool = True) -> CallResponder:
        """The handler of one tool call; `keep=False` answers without recording (a replayed
        call re-run only for its effect on the server)."""
        return CallResponder(self, call_id, keep)

    def count(self, call_id: str) -> int:
        return sum(1 for exchange in self.exchanges if exchange.call_id == call_id)

    def restore(self, call_id: str, recorded: Sequence[dict[str, Any]]) -> None:
        """Put back the exchanges of a call replayed from the store on resume."""
        for entry in recorded:
            exchange = ServerExchange.model_validate(entry)
            self.exchanges.append(
                exchange.model_copy(update={"call_id": call_id, "replayed": True})
            )

    def sampling_target(self, hints: Sequence[str]) -> str:
        configured = self.mcp.sampling.model_group
        if configured is not None and configured not in GROUPS:
            return configured  # one deployment, named in the config
        group = configured or "teacher"
        picked = match_model_hint(hints, self.router.models.group(group))  # type: ignore[arg-type]
        return picked or configured or self.teacher_name

    async def sample(self, request: SamplingRequest) -> SamplingReply:
        if not any(message["role"] != "system" for message in request.messages):
            raise McpError("a sampling request without messages", reason="empty_sampling_request")
        params: dict[str, Any] = {"max_tokens": request.max_tokens}
        if request.temperature is not None:
            params["temperature"] = request.temperature
        if request.stop:
            params["stop"] = request.stop
        target = self.sampling_target(request.model_hints)
        try:
            reply = await self.teacher.complete(
                target, request.messages, params=params, meta=self.meta
            )
        except LlmError as error:
            raise McpError(str(error), reason=f"sampling_{error.reason}") from error
        return SamplingReply(
            text=reply.text,
            model=reply.model,
            answered_by=reply.deployment,
            stop_reason=STOP_REASONS.get(reply.finish_reason or "", reply.finish_reason),
            prompt_tokens=reply.usage.prompt_tokens,
            completion_tokens=reply.usage.completion_tokens,
            cost_usd=reply.cost_usd,
        )

    async def elicit(self, request: ElicitationRequest) -> ElicitationReply:
        policy = self.mcp.elicitation.policy
        if policy != "simulated_user" or request.mode != "form":
            return answer_by_policy(policy, request)
        return await self.ask_simulated_user(request)

    async def ask_simulated_user(self, request: ElicitationRequest) -> ElicitationReply:
        """The user's answer; a failed or invalid one is a `cancel` with its reason."""
        group = self.mcp.elicitation.model_group
        prompt = render(
            "trajectories/elicitation",
            question=self.question,
            message=request.message,
            form_schema=json.dumps(request.requested_schema, ensure_ascii=False, sort_keys=True),
        )
        try:
            answer, reply = await complete_structured(
                self.router,
                group,
                prompt.messages,
                UserAnswer,
                meta=self.meta,
                response_format=user_answer_format(request.requested_schema),
            )
        except LlmError as error:
            return ElicitationReply(
                action="cancel", answered_by=group, error_reason=f"user_simulator_{error.reason}"
            )
        usage = {
            "answered_by": reply.deployment,
            "prompt_tokens": reply.usage.prompt_tokens,
            "completion_tokens": reply.usage.completion_tokens,
            "cost_usd": reply.cost_usd,
        }
        if answer.action != "accept":
            return ElicitationReply(action=answer.action, **usage)
        content = answer.content or {}
        violation, _checked = check_arguments(request.requested_schema, content)
        if violation is not None:
            return ElicitationReply(action="cancel", error_reason="invalid_user_reply", **usage)
        return ElicitationReply(action="accept", content=content, **usage)


class CallResponder:
    """A `ServerRequestHandler` for one tool call of a trajectory."""

    def __init__(self, trajectory: TrajectoryResponder, call_id: str | None, keep: bool) -> None:
        self.trajectory = trajectory
        self.call_id = call_id
        self.keep = keep
        self.exchanges: list[ServerExchange] = []

    async def sample(self, request: SamplingRequest) -> SamplingReply:
        return await self.trajectory.sample(request)

    async def elicit(self, request: ElicitationRequest) -> ElicitationReply:
        return await self.trajectory.elicit(request)

    def record(self, exchange: ServerExchange) -> None:
        exchange = exchange.model_copy(update={"call_id": self.call_id})
        self.exchanges.append(exchange)
        if self.keep:
            self.trajectory.exchanges.append(exchange)
