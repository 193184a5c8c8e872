"""The agent loop: model turn -> real tool calls -> results back, until an answer or a budget.

Plain async code. Two of the styles live here (`function-calling`, `react`); the
LangChain style runs LangChain's own loop (tasks/agent/langchain_style.py) and fills the same
`AgentRun`; tasks/agent/styles.py names them all. Every way a loop can end has a stop reason:

    final_answer        the model answered without calling tools
    empty_answer        ... but the answer was empty
    max_turns           the turn budget ran out while the model still called tools
    wall_clock          the item's wall-clock budget ran out
    repeated_tool_call  the same call with the same arguments, `loop_limit` turns in a row
    server_unavailable  a server of the task was paused by the circuit breaker
    model_error         the model failed after the model layer's retries (reason on the row)
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import BaseModel

from tasks.agent.naming import ExposedTool
from tasks.agent.react import STOP_SEQUENCES, describe_tools, parse_react_reply
from tasks.agent.strict_schema import drop_added_nulls
from tasks.agent.tool_changes import merge_tool_schemas
from tasks.agent.toolbox import Toolbox
from toucan.config import ModelsConfig
from toucan.errors import LlmError
from toucan.llm.replies import CallMeta, LlmReply, any_embedded, join_names
from toucan.prompts import RenderedPrompt, render
from toucan.records import Usage


class Teacher(Protocol):
    """What the loop needs from the model layer (LlmRouter provides it)."""

    async def complete(
        self,
        target: str,
        messages: list[dict[str, Any]],
        *,
        tools: list[dict[str, Any]] | None = None,
        params: dict[str, Any] | None = None,
        meta: CallMeta | None = None,
    ) -> LlmReply: ...


class AgentBudget(BaseModel):
    max_turns: int = 10
    wall_clock_s: float = 120.0
    loop_limit: int = 3  # identical calls in this many consecutive turns end the loop


@dataclass(frozen=True)
class AgentJob:
    """What a style's loop gets for one trajectory (tasks/agent/styles.py)."""

    question: str
    toolbox: Toolbox  # the offered tools, and the calls' log
    teacher: Teacher
    target: str  # the teacher deployment asked
    budget: AgentBudget
    meta: CallMeta
    # for a style that reaches the model with its own client (langchain)
    models: ModelsConfig | None = None
    local_base_url: str | None = None


@dataclass
class AgentRun:
    """What a loop produced; tasks/trajectories.py turns it into a Trajectory row."""

    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]]
    model: str = ""
    deployment: str | None = None  # provenance of the replies, see Trajectory.deployment
    served_by: str | None = None
    served_by_embedded: bool | None = None
    turns: int = 0
    usage: Usage = field(default_factory=Usage)
    cost_usd: float = 0.0
    cached_turns: int = 0  # turns whose reply came from toucan's cache
    stop_reason: str = ""
    error_reason: str | None = None
    error_detail: str | None = None
    wire_messages: list[dict[str, Any]] | None = None  # react: the transcript as sent
    prompt_hash: str = ""  # hash of the style's template
    final_answer: str = ""
    started: float = field(default_factory=time.monotonic)

    def add_usage(self, reply: LlmReply) -> None:
        self.turns += 1
        self.model = reply.model
        self.deployment = join_names(self.deployment, reply.deployment)
        self.served_by = join_names(self.served_by, reply.served_by)
        self.served_by_embedded = any_embedded(self.served_by_embedded, reply.served_by_embedded)
        self.usage.prompt_tokens += reply.usage.prompt_tokens
        self.usage.completion_tokens += reply.usage.completion_tokens
        self.cost_usd += reply.cost_usd
        self.cached_turns += int(reply.cached)

    @property
    def cached(self) -> bool:
        """Every turn's reply came from the cache (nothing was paid for this run)."""
        return self.turns > 0 and self.cached_turns == self.turns


class PendingCall(BaseModel):
    id: str
    name: str
    arguments: str


def assistant_message(text: str, calls: list[PendingCall]) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": text or None}
    if calls:
        message["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments},
            }
            for call in calls
        ]
    return message


def unique_call_ids(calls: list[PendingCall], used: set[str], turn: int) -> list[PendingCall]:
    """Providers need ids unique in a conversation; some models reuse `call_0` every turn."""
    fixed = []
    for index, call in enumerate(calls):
        call_id = call.id if call.id and call.id not in used else f"call_{turn}_{index}"
        used.add(call_id)
        fixed.append(call.model_copy(update={"id": call_id}))
    return fixed


async def ask_model(
    teacher: Teacher,
    target: str,
    messages: list[dict[str, Any]],
    run: AgentRun,
    deadline: float,
    meta: CallMeta,
    **options: Any,
) -> LlmReply | None:
    """One model turn under the wall clock; None (with the stop reason set) when it failed."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        run.stop_reason = "wall_clock"
        return None
    try:
        async with asyncio.timeout(remaining):
            reply = await teacher.complete(target, messages, meta=meta, **options)
    except TimeoutError:
        run.stop_reason = "wall_clock"
        return None
    except LlmError as error:
        run.stop_reason, run.error_reason, run.error_detail = (
            "model_error",
            error.reason,
            str(error),
        )
        return None
    run.add_usage(reply)
    return reply


def server_arguments(toolbox: Toolbox, call: PendingCall) -> str:
    """The arguments text the server gets: the model's, without the nulls a strict-mode
    model must send for optional properties (tasks/agent/strict_schema.py)."""
    tool = toolbox.by_name.get(call.name)
    if tool is None or not (tool.definition or {}).get("function", {}).get("strict"):
        return call.arguments
    try:
        arguments = json.loads(call.arguments)
    except json.JSONDecodeError:
        return call.arguments  # the toolbox reports it to the model
    if not isinstance(arguments, dict):
        return call.arguments
    return json.dumps(drop_added_nulls(arguments, tool.input_schema))


async def run_calls(
    toolbox: Toolbox, calls: list[PendingCall], deadline: float
) -> tuple[list[str], bool]:
    """Execute a turn's calls concurrently; (result texts, ran out of time)."""
    remaining = max(0.001, deadline - time.monotonic())
    tasks = [
        asyncio.ensure_future(toolbox.call(c.id, c.name, server_arguments(toolbox, c)))
        for c in calls
    ]
    done, pending = await asyncio.wait(tasks, timeout=remaining)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    texts = [
        task.result()
        if task in done and not task.cancelled()
        else "Error: the call was cancelled because the agent ran out of time."
        for task in tasks
    ]
    return texts, bool(pending)


async def offer_for_turn(
    toolbox: Toolbox, run: AgentRun, turn: int, offered: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The tools to offer this model turn: `offered`, or the current tools once a server
    announced a change (the row's `tools` then lists both, every tool the run offered)."""
    if not await toolbox.refresh_tools(turn):
        return offered
    current = [tool.openai_schema() for tool in toolbox.exposed]
    run.tools = merge_tool_schemas(run.tools, current)
    return current


def call_signature(calls: list[PendingCall]) -> str:
    return json.dumps(sorted((c.name, c.arguments) for c in calls))


def is_looping(history: list[str], limit: int) -> bool:
    return len(history) >= limit and len(set(history[-limit:])) == 1


@dataclass
class TurnState:
    """What the function-calling loop carries from one model turn to the next, and across a
    conversation's user turns (tasks/conversation.py)."""

    tools: list[dict[str, Any]]  # offered at the next model turn
    used_call_ids: set[str] = field(default_factory=set)
    model_turns: int = 0


def function_calling_prompt(question: str) -> RenderedPrompt:
    """The opening of a trajectory that offers its tools through the provider's tools API."""
    return render("trajectories/function_calling", question=question)


def react_prompt(question: str, exposed: list[ExposedTool]) -> RenderedPrompt:
    """The opening of a ReAct trajectory: the offered tools described in the system prompt."""
    return render("trajectories/react", question=question, tools=describe_tools(exposed))


async def run_function_calling(job: AgentJob) -> AgentRun:
    """The provider's native tools API; a turn's tool calls run concurrently."""
    prompt = function_calling_prompt(job.question)
    tools = [tool.openai_schema() for tool in job.toolbox.exposed]
    run = AgentRun(messages=list(prompt.messages), tools=tools, prompt_hash=prompt.template_hash)
    await run_model_turns(job, run, TurnState(tools))
    return run


async def run_model_turns(job: AgentJob, run: AgentRun, state: TurnState) -> None:
    """Model turn -> the tool calls it asks for -> their results, until the model answers or
    a budget runs out; `run.stop_reason` says which. The transcript is `run.messages` (its
    last message is the user's); `job.question` is not read here."""
    toolbox, budget = job.toolbox, job.budget
    deadline = time.monotonic() + budget.wall_clock_s
    history: list[str] = []
    for _ in range(budget.max_turns):
        state.tools = await offer_for_turn(toolbox, run, state.model_turns, state.tools)
        reply = await ask_model(
            job.teacher,
            job.target,
            run.messages,
            run,
            deadline,
            job.meta,
            tools=state.tools or None,
        )
        if reply is None:
            return
        calls = unique_call_ids(
            [PendingCall(id=c.id, name=c.name, arguments=c.arguments) for c in reply.tool_calls],
            state.used_call_ids,
            state.model_turns,
        )
        state.model_turns += 1
        run.messages.append(assistant_message(reply.text, calls))
        if not calls:
            run.final_answer = reply.text.strip()
            run.stop_reason = "final_answer" if run.final_answer else "empty_answer"
            return
        texts, out_of_time = await run_calls(toolbox, calls, deadline)
        for call, text in zip(calls, texts, strict=True):
            run.messages.append(
                {"role": "tool", "tool_call_id": call.id, "name": call.name, "content": text}
            )
        if stop := stop_after_calls(toolbox, history, calls, budget, out_of_time):
            run.stop_reason = stop
            return
    run.stop_reason = "max_turns"


def stop_after_calls(
    toolbox: Toolbox,
    history: list[str],
    calls: list[PendingCall],
    budget: AgentBudget,
    out_of_time: bool,
) -> str | None:
    history.append(call_signature(calls))
    if out_of_time:
        return "wall_clock"
    if toolbox.paused is not None:
        return "server_unavailable"
    if is_looping(history, budget.loop_limit):
        return "repeated_tool_call"
    return None


async def run_react(job: AgentJob) -> AgentRun:
    """Tools described in the system prompt; calls parsed from the reply text by us."""
    toolbox, budget = job.toolbox, job.budget
    prompt = react_prompt(job.question, toolbox.exposed)
    run = AgentRun(
        messages=list(prompt.messages),
        tools=[tool.openai_schema() for tool in toolbox.exposed],  # shown in the system prompt
        wire_messages=list(prompt.messages),
        prompt_hash=prompt.template_hash,
    )
    deadline = time.monotonic() + budget.wall_clock_s
    history: list[str] = []
    for turn in range(budget.max_turns):
        reply = await ask_model(
            job.teacher,
            job.target,
            run.wire_messages or [],
            run,
            deadline,
            job.meta,
            params={"stop": STOP_SEQUENCES},
        )
        if reply is None:
            return run
        parsed = parse_react_reply(reply.text)
        calls = [
            PendingCall(id=f"react_{turn}_{index}", name=action.name, arguments=action.arguments)
            for index, action in enumerate(parsed.actions)
        ]
        run.messages.append(assistant_message(reply.text, calls))
        run.wire_messages.append({"role": "assistant", "content": reply.text})  # type: ignore[union-attr]
        if not calls:
            run.final_answer = parsed.final_answer or ""
            run.stop_reason = "final_answer" if run.final_answer else "empty_answer"
            return run
        texts, out_of_time = await run_calls(toolbox, calls, deadline)
        observations = []
        for call, text in zip(calls, texts, strict=True):
            run.messages.append(
                {"role": "tool", "tool_call_id": call.id, "name": call.name, "content": text}
            )
            observations.append({"name": call.name, "call_id": call.id, "text": text})
        observation = render("trajectories/react_observation", observations=observations)
        run.wire_messages.extend(observation.messages)  # type: ignore[union-attr]
        if stop := stop_after_calls(toolbox, history, calls, budget, out_of_time):
            run.stop_reason = stop
            return run
    run.stop_reason = "max_turns"
    return run
