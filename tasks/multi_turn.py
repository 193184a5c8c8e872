"""Extension 3, multi-turn: (a) split a multi-tool task into sequential sub-questions asked
turn by turn in one conversation; (b) extend a kept trajectory with follow-ups from an LLM user
simulator. Both keep the same live MCP sessions for the whole conversation, so server state
carries over; requested and completed user turns are recorded honestly (a failed follow-up is
rolled back and not counted).
"""

from __future__ import annotations

import logging
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from tasks.agent import AgentRun, Teacher, Toolbox, name_map
from tasks.agent.batch import BatchOptions, item_meta
from tasks.agent.loop import TurnState
from tasks.agent.naming import ExposedTool
from tasks.agent.server_requests import TrajectoryResponder
from tasks.agent.tool_changes import ToolWatch
from tasks.conversation import Conversation, PinnedSessions, replay_prefix, run_user_turn
from tasks.prompt_budget import capped_response_format, with_item_count
from tasks.tool_offer import define_tool, original_tools
from tasks.trajectory_records import client_metadata, offered_ever, run_usage, server_exchanges
from toucan.config import PromptBudget
from toucan.errors import LlmError
from toucan.ids import make_id
from toucan.llm.parsing import response_format_for
from toucan.llm.replies import CallMeta
from toucan.llm.router import LlmRouter
from toucan.llm.structured import complete_structured
from toucan.llm.tool_rules import DEFAULT_RULES, ToolRules
from toucan.prompts import render
from toucan.records import Task, Trajectory, utc_now

logger = logging.getLogger(__name__)
STAGE = "multi_turn"
HISTORY_TOOL_CHARS = 100  # the simulator sees tool output cut short, as in TOUCAN
MIN_QUESTION_CHARS = 5


class SplitReply(BaseModel):
    model_config = ConfigDict(extra="ignore")

    sub_questions: list[str]


class FollowUp(BaseModel):
    model_config = ConfigDict(extra="ignore")

    question: str


SPLIT_FORMAT = response_format_for(SplitReply)
FOLLOW_UP_FORMAT = response_format_for(FollowUp)


class MultiTurnItem(BaseModel):
    """One conversation to build: a split of `task`, or an extension of `base`."""

    trajectory_id: str
    method: Literal["split", "extend"]
    task: Task
    teacher: str
    follow_ups: int = 0  # extend: user turns to add
    base: Trajectory | None = None


def split_item_id(task_id: str, teacher: str) -> str:
    return make_id("traj", "multi_turn", "split", task_id, teacher)


def extend_item_id(base_id: str, follow_ups: int) -> str:
    return make_id("traj", "multi_turn", "extend", base_id, follow_ups)


def condensed_history(messages: list[dict[str, Any]]) -> list[dict[str, str]]:
    """What the user simulator sees: no system prompt, tool output cut short."""
    history = []
    for message in messages:
        role = message.get("role")
        text = str(message.get("content") or "")
        if role == "system":
            continue
        if role == "tool":
            text = text[:HISTORY_TOOL_CHARS] + ("..." if len(text) > HISTORY_TOOL_CHARS else "")
        elif role == "assistant" and message.get("tool_calls"):
            names = ", ".join(c["function"]["name"] for c in message["tool_calls"])
            text = f"{text} (called: {names})".strip()
        history.append({"role": str(role), "text": text})
    return history


def valid_sub_questions(reply: SplitReply, wanted: int) -> list[str] | None:
    questions = [q.strip() for q in reply.sub_questions if q and q.strip()]
    if len(questions) < 2 or len(questions) > wanted:
        return None
    if any(len(q) < MIN_QUESTION_CHARS for q in questions):
        return None
    return questions


async def ask_split(
    item: MultiTurnItem, router: LlmRouter, meta: CallMeta, budget: PromptBudget | None = None
) -> list[str] | None:
    count = len(item.task.target_tools)
    prompt = render(
        f"{STAGE}/split",
        question=item.task.question,
        tools=[t.model_dump() for t in item.task.target_tools],
        count=count,
    )
    reply, _ = await complete_structured(
        router,
        "generator",
        prompt.messages,
        SplitReply,
        meta=meta,
        response_format=capped_response_format(
            with_item_count(SPLIT_FORMAT, "sub_questions", 2, max(2, count)),
            budget or PromptBudget(),
        ),
    )
    return valid_sub_questions(reply, len(item.task.target_tools))


async def ask_follow_up(
    messages: list[dict[str, Any]],
    router: LlmRouter,
    meta: CallMeta,
    budget: PromptBudget | None = None,
) -> str | None:
    """The simulated user's next message, or None when it is empty or a repeat."""
    prompt = render(f"{STAGE}/user_simulator", history=condensed_history(messages))
    reply, _ = await complete_structured(
        router,
        "generator",
        prompt.messages,
        FollowUp,
        meta=meta,
        response_format=capped_response_format(FOLLOW_UP_FORMAT, budget or PromptBudget()),
    )
    question = reply.question.strip()
    earlier = {str(m.get("content") or "").strip() for m in messages if m.get("role") == "user"}
    if len(question) < MIN_QUESTION_CHARS or question in earlier:
        return None
    return question


def start_conversation(
    item: MultiTurnItem,
    exposed: list[ExposedTool],
    pinned: PinnedSessions,
    options: BatchOptions,
    responder: TrajectoryResponder | None = None,
    catalog: list[ExposedTool] | None = None,
    rules: ToolRules = DEFAULT_RULES,
) -> Conversation:
    """A transcript to continue: the base trajectory's, or a fresh system prompt. `catalog`
    (default: `exposed`) is every tool listed, for following tool-list changes; tools that
    join the offer are defined for `rules` like the first ones."""
    toolbox = Toolbox(
        item.trajectory_id,
        exposed,
        pinned,
        token_budget=options.token_budget,
        call_timeout=options.mcp.call_timeout_s,
        run_id=options.run_id,
        responder=responder,
        watch=ToolWatch(
            pinned,
            catalog or exposed,
            namespaced=len(set(item.task.server_ids)) > 1,
            rules=rules,
            define=lambda tool: define_tool(
                tool, rules, options.models.prompt_budget.description_chars
            ),
        ),
    )
    tools = [tool.openai_schema() for tool in exposed]
    if (base := item.base) is not None:
        run = AgentRun(
            messages=list(base.messages),
            tools=tools,
            prompt_hash=base.prompt_hash,
            # the base's turns stay in the transcript: so does who answered them
            deployment=base.deployment,
            served_by=base.served_by,
            served_by_embedded=base.served_by_embedded,
        )
        used = {c["id"] for m in run.messages for c in m.get("tool_calls") or [] if c.get("id")}
        return Conversation(run, toolbox, TurnState(tools, used_call_ids=used), completed_turns=1)
    prompt = render("trajectories/function_calling", question=item.task.question)
    system = [m for m in prompt.messages if m["role"] == "system"]
    run = AgentRun(messages=system, tools=tools, prompt_hash=prompt.template_hash)
    return Conversation(run, toolbox, TurnState(tools))


async def converse(
    item: MultiTurnItem,
    exposed: list[ExposedTool],
    pinned: PinnedSessions,
    teacher: Teacher,
    router: LlmRouter,
    options: BatchOptions,
    catalog: list[ExposedTool] | None = None,
    rules: ToolRules = DEFAULT_RULES,
) -> tuple[Trajectory, Conversation]:
    """Build one multi-turn conversation; every failure ends up on the row. `catalog`: every
    tool listed (default: `exposed`); server requests during calls are answered as in
    trajectories (tasks/agent/server_requests.py)."""
    started_at = utc_now()
    meta = item_meta(item, options.run_id, STAGE)
    budget = options.budget
    responder = TrajectoryResponder(
        router, item.teacher, meta, options.mcp, item.task.question, teacher=teacher
    )
    conversation = start_conversation(item, exposed, pinned, options, responder, catalog, rules)
    details: dict[str, Any] = {
        "method": item.method,
        "agent_model": item.teacher,
        "user_simulation_model": "generator",
    }
    if item.method == "split":
        try:
            questions = await ask_split(item, router, meta, options.models.prompt_budget)
        except LlmError as error:
            questions, details["split_error"] = None, error.reason
        if questions is None:
            conversation.failed_reason = details.get("split_error") or "bad_split"
            return build_row(item, conversation, 0, details, started_at), conversation
        details["sub_questions"] = questions
        requested = len(questions)
        for question in questions:
            if pinned.dead_servers() and conversation.completed_turns:
                conversation.failed_reason = "server_died_between_turns"
                break
            if not await run_user_turn(conversation, question, teacher, item.teacher, budget, meta):
                break
    else:
        requested = 1 + item.follow_ups
        assert item.base is not None
        details["replay_failures"] = await replay_prefix(
            pinned,
            item.base.tool_call_log,
            options.mcp.call_timeout_s,
            responder.for_call(None, keep=False),  # the base row already shows its exchanges
        )
        for _ in range(item.follow_ups):
            try:
                question = await ask_follow_up(
                    conversation.run.messages, router, meta, options.models.prompt_budget
                )
            except LlmError as error:
                conversation.failed_reason = f"user_simulator_{error.reason}"
                break
            if question is None:
                conversation.failed_reason = "bad_follow_up"
                break
            if pinned.dead_servers():
                conversation.failed_reason = "server_died_between_turns"
                break
            if not await run_user_turn(conversation, question, teacher, item.teacher, budget, meta):
                break
    return build_row(item, conversation, requested, details, started_at), conversation


def build_row(
    item: MultiTurnItem,
    conversation: Conversation,
    requested: int,
    details: dict[str, Any],
    started_at: Any,
) -> Trajectory:
    """The trajectory with honest turn counts: ok only when at least two user turns completed."""
    run, toolbox = conversation.run, conversation.toolbox
    completed = conversation.completed_turns
    base_log = item.base.tool_call_log if item.base is not None else []
    calls = sum(len(m.get("tool_calls") or []) for m in run.messages if m["role"] == "assistant")
    ok = completed >= 2
    reason = None if ok and completed == requested else conversation.failed_reason
    return Trajectory(
        trajectory_id=item.trajectory_id,
        task_id=item.task.task_id,
        kind="multi_turn",
        parent_id=item.base.trajectory_id if item.base is not None else None,
        teacher=item.teacher,
        model=run.model or (item.base.model if item.base is not None else ""),
        deployment=run.deployment,
        served_by=run.served_by,
        served_by_embedded=run.served_by_embedded,
        style="function-calling",
        messages=run.messages,
        tools=run.tools,
        original_tools=original_tools(offered_ever(toolbox)),
        tool_name_map=name_map(offered_ever(toolbox)),
        schema_hashes={tool.name: tool.schema_hash for tool in offered_ever(toolbox)},
        turns=run.turns + (item.base.turns if item.base is not None else 0),
        tool_calls=calls,
        tool_errors=toolbox.errors + (item.base.tool_errors if item.base is not None else 0),
        tool_call_log=[*base_log, *toolbox.log],
        usage=run_usage(run, toolbox),
        cost_usd=run.cost_usd + sum(e.cost_usd for e in server_exchanges(toolbox)),
        cached=run.cached,
        stop_reason=run.stop_reason or (conversation.failed_reason or ""),
        status="ok" if ok else "error",
        reason=reason if not ok else None,
        requested_turns=requested,
        completed_turns=completed,
        prompt_hash=run.prompt_hash,
        metadata={
            "question": item.task.question,
            "multi_turn_generation": {
                **details,
                "requested_turns": requested,
                "completed_turns": completed,
                "failed_turn_reason": reason,
            },
        }
        | client_metadata(toolbox, item.base.metadata if item.base is not None else None),
        run_id=None,
        started_at=started_at,
        finished_at=utc_now(),
    )
