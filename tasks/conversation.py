"""A conversation over several user turns on live MCP sessions held for its whole length.

`PinnedSessions` keeps the sessions a conversation started on (from `SessionPool.session_for`)
and never swaps in a restarted one: if a server dies between turns its state is gone, so the
next call fails and the turn does not count. `run_user_turn` runs one user turn of the
function-calling loop (tasks/agent/loop.py's `run_model_turns`) and rolls the turn back when
it failed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psutil

from mcp_env.results import ListedTool, ToolResult
from mcp_env.server_requests import ServerRequestHandler
from mcp_env.session import McpSession
from tasks.agent.loop import AgentBudget, AgentJob, AgentRun, Teacher, TurnState, run_model_turns
from tasks.agent.toolbox import Toolbox
from toucan.errors import ServerCrashed
from toucan.llm.replies import CallMeta
from toucan.records import CallLog

CRASH_REASONS = ("server_crashed", "server_died", "server_start_failed", "too_many_restarts")


def session_alive(session: McpSession) -> bool:
    """The session's own view, plus the process table (a killed child is not reaped at once)."""
    if not session.is_alive():
        return False
    pid = session.pid
    if pid is None:
        return True
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@dataclass
class PinnedSessions:
    """A ToolCaller over fixed sessions: calls go to the session the conversation began on."""

    sessions: dict[str, McpSession]
    timeout_max: float | None = None  # a call's cap however much progress it reports

    def dead_servers(self) -> list[str]:
        return [sid for sid, session in self.sessions.items() if not session_alive(session)]

    async def call_tool(
        self, server_id: str, tool: str, arguments: dict[str, Any], **options: Any
    ) -> ToolResult:
        """`options` as ToolCaller.call_tool's (timeout, handler)."""
        session = self.sessions[server_id]
        if not session_alive(session):
            raise ServerCrashed(
                f"{session.spec.name} died during the conversation; its state is gone",
                reason="server_died",
            )
        return await session.call_tool(tool, arguments, timeout_max=self.timeout_max, **options)

    def tools_generation(self, server_id: str) -> int:
        return self.sessions[server_id].tools_generation

    async def relist_tools(self, server_id: str) -> list[ListedTool]:
        return await self.sessions[server_id].list_tools()


@dataclass
class Conversation:
    """The running transcript and what the turn loop needs to carry between user turns."""

    run: AgentRun
    toolbox: Toolbox
    turns: TurnState
    completed_turns: int = 0
    failed_reason: str | None = None


async def run_user_turn(
    conversation: Conversation,
    user_text: str | None,
    teacher: Teacher,
    target: str,
    budget: AgentBudget,
    meta: CallMeta,
) -> bool:
    """One user turn to its final answer. `user_text` None = the transcript already ends with
    the user's message. Returns whether the turn completed; a failed turn is rolled back."""
    run, toolbox = conversation.run, conversation.toolbox
    mark, log_mark = len(run.messages), len(toolbox.log)
    if user_text is not None:
        run.messages.append({"role": "user", "content": user_text})
    run.stop_reason = ""
    job = AgentJob(
        question=user_text or "",
        toolbox=toolbox,
        teacher=teacher,
        target=target,
        budget=budget,
        meta=meta,
    )
    await run_model_turns(job, run, conversation.turns)
    crashed = [e for e in toolbox.log[log_mark:] if e.error_reason in CRASH_REASONS]
    if run.stop_reason == "final_answer" and not crashed:
        conversation.completed_turns += 1
        return True
    conversation.failed_reason = "server_died_between_turns" if crashed else run.stop_reason
    if user_text is not None:
        del run.messages[mark:]
    return False


async def replay_prefix(
    pinned: PinnedSessions,
    calls: list[CallLog],
    timeout: float,
    handler: ServerRequestHandler | None = None,
) -> int:
    """Re-run an earlier trajectory's successful calls on the new sessions so server state
    matches the transcript; returns how many failed (recorded, not fatal). `handler` answers
    what the servers ask meanwhile (else the sessions' fallback refuses sampling)."""
    failures = 0
    for entry in calls:
        if entry.is_error or entry.server_id not in pinned.sessions or entry.tool is None:
            continue
        try:
            result = await pinned.call_tool(
                entry.server_id,
                entry.tool,
                entry.arguments,
                timeout=timeout,
                handler=handler,
            )
        except Exception:  # any failure here only means the state may differ; counted
            failures += 1
            continue
        failures += int(result.is_error)
    return failures
