"""Extension 3, multi-turn: (a) split a multi-tool task into sequential sub-questions asked
turn by turn in one conversation; (b) extend a kept trajectory with follow-ups from an LLM user
simulator. Both keep the same live MCP sessions for the whole conversation, so server state
carries over; requested and completed user turns are recorded honestly (a failed follow-up is
rolled back and not counted). The items and rows are in tasks/multi_turn_records.py, the
batch in tasks/multi_turn_batch.py.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from tasks.agent import AgentRun, Teacher, Toolbox
from tasks.agent.batch import BatchOptions, item_meta
from tasks.agent.loop import TurnState
from tasks.agent.naming import ExposedTool
from tasks.agent.server_requests import TrajectoryResponder
from tasks.agent.tool_changes import ToolWatch
from tasks.conversation import Conversation, PinnedSessions, replay_prefix, run_user_turn
from tasks.multi_turn_records import STAGE, MultiTurnGeneration, MultiTurnItem, build_row
from tasks.prompt_budget import capped_response_format, with_item_count
from tasks.tool_offer import define_tool
from toucan.config import PromptBudget
from toucan.errors import LlmError
from toucan.llm.parsing import ModelReply, response_format_for
from toucan.llm.replies import CallMeta
from toucan.llm.router import LlmRouter
from toucan.llm.structured import complete_structured
from toucan.llm.tool_rules import DEFAULT_RULES, ToolRules
from toucan.prompts import render
from toucan.records import Trajectory, utc_now

logger = logging.getLogger(__name__)
HISTORY_TOOL_CHARS = 100  # the simulator sees tool output cut short, as in TOUCAN
MIN_QUESTION_CHARS = 5


class SplitReply(ModelReply):
    sub_questions: list[str]


class FollowUp(ModelReply):
    question: str


SPLIT_FORMAT = response_format_for(SplitReply)
FOLLOW_UP_FORMAT = response_format_for(FollowUp)


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
    responder = TrajectoryResponder(
        router, item.teacher, meta, options.mcp, item.task.question, teacher=teacher
    )
    conversation = start_conversation(item, exposed, pinned, options, responder, catalog, rules)
    details = MultiTurnGeneration(
        method=item.method, agent_model=item.teacher, user_simulation_model="generator"
    )
    turns = UserTurns(conversation, pinned, teacher, router, item.teacher, options, meta)
    if item.method == "split":
        requested = await turns.split(item, details)
    else:
        assert item.base is not None
        details.replay_failures = await replay_prefix(
            pinned,
            item.base.tool_call_log,
            options.mcp.call_timeout_s,
            responder.for_call(None, keep=False),  # the base row already shows its exchanges
        )
        requested = 1 + item.follow_ups
        await turns.extend(item.follow_ups)
    return build_row(item, conversation, requested, details, started_at), conversation


@dataclass
class UserTurns:
    """The user turns of one conversation: sub-questions of a split, or simulated follow-ups."""

    conversation: Conversation
    pinned: PinnedSessions
    teacher: Teacher
    router: LlmRouter  # the user simulator's and the splitter's model
    target: str  # the teacher deployment
    options: BatchOptions
    meta: CallMeta

    async def ask(self, question: str) -> bool:
        """One user turn to its answer; False when it failed (the conversation ends)."""
        return await run_user_turn(
            self.conversation, question, self.teacher, self.target, self.options.budget, self.meta
        )

    async def split(self, item: MultiTurnItem, details: MultiTurnGeneration) -> int:
        """Ask the task's sub-questions in turn; returns how many were asked for (0 when the
        split failed: the reason is the conversation's)."""
        conversation = self.conversation
        try:
            questions = await ask_split(
                item, self.router, self.meta, self.options.models.prompt_budget
            )
        except LlmError as error:
            questions, details.split_error = None, error.reason
        if questions is None:
            conversation.failed_reason = details.split_error or "bad_split"
            return 0
        details.sub_questions = questions
        for question in questions:
            if self.pinned.dead_servers() and conversation.completed_turns:
                conversation.failed_reason = "server_died_between_turns"
                break
            if not await self.ask(question):
                break
        return len(questions)

    async def extend(self, follow_ups: int) -> None:
        """Up to `follow_ups` simulated user questions, each answered in turn."""
        conversation = self.conversation
        for _ in range(follow_ups):
            try:
                question = await ask_follow_up(
                    conversation.run.messages,
                    self.router,
                    self.meta,
                    self.options.models.prompt_budget,
                )
            except LlmError as error:
                conversation.failed_reason = f"user_simulator_{error.reason}"
                return
            if question is None:
                conversation.failed_reason = "bad_follow_up"
                return
            if self.pinned.dead_servers():
                conversation.failed_reason = "server_died_between_turns"
                return
            if not await self.ask(question):
                return
