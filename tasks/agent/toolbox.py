"""The tools of one trajectory: route exposed names to servers, replay recorded calls, record
new ones, and turn every failure into a tool result the model sees.

A tool error is real data: it goes back to the model as the tool's answer and is counted. An
unknown tool, arguments that are not JSON, a hung tool and a crashed server all become such
results (with a reason token) instead of exceptions. Infrastructure failures also feed the
run's circuit breaker, which pauses a server after N consecutive ones.

Sampling and elicitation requests a server makes during a call are answered by the
trajectory's responder (tasks/agent/server_requests.py) and counted on the call's log entry;
`refresh_tools` follows the servers' tool-list changes (tasks/agent/tool_changes.py).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections import Counter
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, Protocol

from mcp_env.results import ToolResult
from mcp_env.server_requests import ServerRequestHandler
from mcp_env.tool_schemas import check_instance
from tasks.agent.breaker import SERVER_HANGING, SERVER_PAUSED, ServerBreaker
from tasks.agent.journal import CallJournal
from tasks.agent.naming import ExposedTool
from tasks.agent.tool_changes import ToolWatch
from tasks.agent.truncation import truncate_to_budget
from toucan.breaker import Paused
from toucan.errors import McpError
from toucan.ids import canonical_json, make_id
from toucan.records import CallLog, ToolCallRecord

if TYPE_CHECKING:
    from tasks.agent.server_requests import TrajectoryResponder


class ToolCaller(Protocol):
    """What the toolbox needs from the MCP layer (the session pool provides it)."""

    async def call_tool(
        self,
        server_id: str,
        tool: str,
        arguments: dict[str, Any],
        *,
        timeout: float,
        handler: ServerRequestHandler | None = None,
    ) -> ToolResult: ...


def call_key(
    trajectory_id: str,
    server_id: str,
    tool: str,
    schema_hash: str,
    arguments: dict[str, Any],
    occurrence: int,
) -> str:
    """Key of a call within a trajectory: the nth identical call gets its own key."""
    return make_id("call", trajectory_id, server_id, tool, schema_hash, arguments, occurrence)


def decode_arguments(text: str) -> tuple[dict[str, Any] | None, str | None]:
    """(arguments, None) or (None, problem) for the JSON text a model wrote."""
    try:
        value = json.loads(text or "{}")
    except json.JSONDecodeError as error:
        return None, f"arguments are not valid JSON: {error}"
    if not isinstance(value, dict):
        return None, "arguments must be a JSON object"
    return value, None


def check_arguments(schema: dict[str, Any], arguments: dict[str, Any]) -> tuple[str | None, bool]:
    """(first schema violation or None, whether the check ran). Used to label a call, never
    to block it: a schema that cannot be checked (invalid, or a `$ref` to nothing) leaves the
    call unlabelled, and the server's own answer says what was wrong."""
    checked, message = check_instance(schema, arguments)
    return (message if checked else None), checked


class Toolbox:
    """Per-trajectory tool access; holds the call log and the records to store."""

    def __init__(
        self,
        trajectory_id: str,
        exposed: list[ExposedTool],
        caller: ToolCaller,
        *,
        token_budget: int,
        call_timeout: float,
        replay: dict[str, dict[str, Any]] | None = None,
        journal: CallJournal | None = None,
        breaker: ServerBreaker | None = None,
        run_id: str | None = None,
        restate_servers: frozenset[str] = frozenset(),
        responder: TrajectoryResponder | None = None,
        watch: ToolWatch | None = None,
    ) -> None:
        self.trajectory_id = trajectory_id
        self.exposed = exposed
        self.by_name = {tool.name: tool for tool in exposed}
        self.caller = caller
        self.token_budget = token_budget
        self.call_timeout = call_timeout
        self.replay = replay or {}
        self.journal = journal
        self.breaker = breaker
        self.run_id = run_id
        # per-trajectory servers start empty on resume: their replayed calls run again (the
        # recorded result is still what the model sees) so later live calls find their state
        self.restate_servers = restate_servers
        self.responder = responder
        self.watch = watch
        self.ever_exposed = dict(self.by_name)  # every tool offered in the run, latest schema
        self.log: list[CallLog] = []
        self.records: list[ToolCallRecord] = []
        self.paused: Paused | None = None
        self._occurrences: Counter[str] = Counter()
        self._origin = time.perf_counter()

    @property
    def errors(self) -> int:
        return sum(1 for entry in self.log if entry.is_error)

    async def refresh_tools(self, turn: int) -> bool:
        """Re-list servers that announced a tool-list change; True when the offer changed."""
        offer = await self.watch.refresh(self.exposed, turn) if self.watch is not None else None
        if offer is None:
            return False
        self.exposed = offer
        self.by_name = {tool.name: tool for tool in offer}
        self.ever_exposed.update(self.by_name)
        return True

    async def call(self, call_id: str, name: str, arguments_text: str) -> str:
        """Run one call the model asked for; returns the text the model will see."""
        started = time.perf_counter()
        exposed = self.by_name.get(name)
        arguments, problem = decode_arguments(arguments_text)
        if exposed is None:
            known = ", ".join(sorted(self.by_name)) or "none"
            if self.watch is not None and name in self.watch.removed:
                text, reason = f"Error: the server removed the tool {name!r}.", "tool_removed"
            else:
                text, reason = f"Error: unknown tool {name!r}.", "unknown_tool"
            result = ToolResult.failure(f"{text} Available tools: {known}.", reason)
            return self._log(call_id, name, None, arguments or {}, result, started)
        if arguments is None:
            result = ToolResult.failure(f"Error: {problem}", "bad_arguments")
            return self._log(call_id, name, exposed, {}, result, started)
        violation, checked = check_arguments(exposed.input_schema, arguments)
        result, replayed, key = await self._execute(exposed, arguments, call_id)
        notes = [] if checked else ["arguments_unchecked"]
        return self._log(
            call_id, name, exposed, arguments, result, started, violation, replayed, key, notes
        )

    async def _execute(
        self, exposed: ExposedTool, arguments: dict[str, Any], call_id: str
    ) -> tuple[ToolResult, bool, str]:
        identity = canonical_json([exposed.server_id, exposed.tool, arguments])
        occurrence = self._occurrences[identity]
        self._occurrences[identity] += 1
        key = call_key(
            self.trajectory_id,
            exposed.server_id,
            exposed.tool,
            exposed.schema_hash,
            arguments,
            occurrence,
        )
        if key in self.replay:
            if exposed.server_id in self.restate_servers:
                await self._restate(exposed, arguments)
            if self.responder is not None:
                self.responder.restore(call_id, self.replay[key].get("server_requests") or [])
            return ToolResult.model_validate(self.replay[key]), True, key
        handler = self.responder.for_call(call_id) if self.responder is not None else None
        result, answered = await self._send(exposed, arguments, handler)
        if answered:
            self._remember(key, exposed, arguments, result, handler.exchanges if handler else [])
        return result, False, key

    async def _send(
        self, exposed: ExposedTool, arguments: dict[str, Any], handler: Any
    ) -> tuple[ToolResult, bool]:
        """(result, whether the server answered) of one live call, through the breaker: an
        infrastructure failure counts against the server, an answer (tool errors included)
        clears it; a call the breaker refused or stopped waiting for was not answered."""

        def send() -> Awaitable[ToolResult]:
            return self._call_server(exposed, arguments, handler)

        breaker = self.breaker
        try:
            outcome = await (
                send() if breaker is None else breaker.watch_for_hang(exposed.server_id, send)
            )
        except McpError as error:
            if breaker is not None:
                breaker.record_failure(exposed.server_id, error.reason, str(error))
            return ToolResult.failure(f"Error: {error.reason}: {error}"[:2000], error.reason), False
        if isinstance(outcome, Paused):
            return self._refused(exposed, outcome), False
        if breaker is not None:
            breaker.record_success(exposed.server_id)
        return outcome, True

    def _refused(self, exposed: ExposedTool, refusal: Paused) -> ToolResult:
        """The result of a call the breaker did not send or stopped waiting for: the server is
        paused (the trajectory then ends: `toolbox.paused`) or hanging (the model may go on)."""
        if (paused := self.breaker.paused(exposed.server_id) if self.breaker else None) is None:
            text = f"Error: server {exposed.server} is not answering: {refusal.detail}"
            return ToolResult.failure(text, SERVER_HANGING)
        self.paused = paused
        text = f"Error: server {exposed.server} is unavailable: {paused.reason}"
        return ToolResult.failure(text, SERVER_PAUSED)

    async def _restate(self, exposed: ExposedTool, arguments: dict[str, Any]) -> None:
        """Re-run a replayed call for its effect on the server; its result is not used."""
        if self.breaker is not None and self.breaker.paused(exposed.server_id):
            return
        handler = self.responder.for_call(None, keep=False) if self.responder else None
        with contextlib.suppress(McpError):
            await self._call_server(exposed, arguments, handler)

    def _call_server(
        self, exposed: ExposedTool, arguments: dict[str, Any], handler: Any
    ) -> Awaitable[ToolResult]:
        """The call itself, to the tool's server under its own name, within the call timeout."""
        return self.caller.call_tool(
            exposed.server_id, exposed.tool, arguments, timeout=self.call_timeout, handler=handler
        )

    def _remember(
        self,
        key: str,
        exposed: ExposedTool,
        arguments: dict[str, Any],
        result: ToolResult,
        exchanges: list[Any],
    ) -> None:
        stored = result.model_dump(mode="json")
        if exchanges:  # replayed with the result on resume, so the row still shows them
            stored["server_requests"] = [e.model_dump(mode="json") for e in exchanges]
        record = ToolCallRecord(
            call_key=key,
            server_id=exposed.server_id,
            tool=exposed.tool,
            schema_hash=exposed.schema_hash,
            arguments=arguments,
            result=stored,
            trajectory_id=self.trajectory_id,
            run_id=self.run_id,
        )
        self.records.append(record)
        if self.journal is not None:
            self.journal.append(record)

    def _log(
        self,
        call_id: str,
        name: str,
        exposed: ExposedTool | None,
        arguments: dict[str, Any],
        result: ToolResult,
        started: float,
        violation: str | None = None,
        replayed: bool = False,
        key: str | None = None,
        notes: list[str] | None = None,
    ) -> str:
        shown = truncate_to_budget(result, self.token_budget)
        notes = [*(notes or []), *([result.note] if result.note else [])]
        self.log.append(
            CallLog(
                call_id=call_id,
                name=name,
                server_id=exposed.server_id if exposed else None,
                server=exposed.server if exposed else None,
                tool=exposed.tool if exposed else None,
                arguments=arguments,
                started_ms=round((started - self._origin) * 1000, 3),
                latency_ms=round(result.latency_ms or (time.perf_counter() - started) * 1000, 3),
                is_error=result.is_error,
                error_reason=result.error_reason if result.is_error else None,
                schema_violation=violation,
                truncated=shown.truncated,
                original_chars=shown.original_chars,
                replayed=replayed,
                call_key=key,
                notes=notes,
                server_requests=self.responder.count(call_id) if self.responder else 0,
            )
        )
        return shown.text
