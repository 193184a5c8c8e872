"""The client side of one MCP session: what the server may send us besides answers.

`SessionCallbacks` is handed to the SDK's `Client` (sampling, elicitation and notification
callbacks), so the session advertises the `sampling` and `elicitation` capabilities and
answers those requests instead of refusing them. It also keeps:

- the tool calls in flight (`InFlightCall`): a server request goes to the handler of the
  oldest one (stdio carries no link between a server request and the call it serves), and
  every in-flight call's idle clock stops while we answer (the server is waiting on us);
- the tool-list generation, raised by each `notifications/tools/list_changed`, so the pool
  and the agent know to re-list.

SDK types stop here: handlers see the records of mcp_env/server_requests.py.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.lowlevel
import httpx2
import mcp_types as types
from mcp import Client
from mcp.shared.exceptions import MCPError
from pydantic import BaseModel, ValidationError

from mcp_env.results import describe_block
from mcp_env.server_requests import (
    ElicitationRequest,
    PolicyHandler,
    SamplingRequest,
    ServerExchange,
    ServerRequestHandler,
)
from toucan.errors import McpError, ToolTimeout

logger = logging.getLogger(__name__)

# a server that announces tools.listChanged answers a ping this fast, or is not asked again
SETTLE_PING_TIMEOUT_S = 5.0


@dataclass
class InFlightCall:
    """One tools/call awaiting its result; `idle` is the cancel scope of its idle clock."""

    handler: ServerRequestHandler | None
    idle: anyio.CancelScope
    idle_timeout: float
    waiting_on_us: int = 0
    progress_updates: int = 0

    def restart_clock(self) -> None:
        if not self.waiting_on_us:
            self.idle.deadline = anyio.current_time() + self.idle_timeout

    async def on_progress(self, progress: float, total: float | None, message: str | None) -> None:
        """Each `notifications/progress` for this call restarts its idle clock."""
        self.progress_updates += 1
        self.restart_clock()

    def hold(self) -> None:
        self.waiting_on_us += 1
        self.idle.deadline = math.inf

    def release(self) -> None:
        self.waiting_on_us -= 1
        self.restart_clock()


def wire(model: BaseModel) -> dict[str, Any]:
    return model.model_dump(by_alias=True, mode="json", exclude_none=True)


def to_sampling_request(params: types.CreateMessageRequestParams) -> SamplingRequest:
    """OpenAI-format messages from the MCP ones; non-text blocks become readable markers."""
    messages = [{"role": "system", "content": params.system_prompt}] if params.system_prompt else []
    for message in params.messages:
        texts = [describe_block(block)[1] for block in message.content_as_list]
        messages.append({"role": message.role, "content": "\n".join(texts)})
    hints = params.model_preferences.hints if params.model_preferences else None
    return SamplingRequest(
        messages=messages,
        max_tokens=params.max_tokens,
        temperature=params.temperature,
        stop=list(params.stop_sequences or []),
        model_hints=[hint.name for hint in hints or [] if hint.name],
    )


def to_elicitation_request(params: types.ElicitRequestParams) -> ElicitationRequest:
    if isinstance(params, types.ElicitRequestURLParams):
        return ElicitationRequest(mode="url", message=params.message, url=params.url)
    return ElicitationRequest(message=params.message, requested_schema=params.requested_schema)


class SessionCallbacks:
    """Per-session state behind the SDK callbacks; see the module docstring."""

    def __init__(
        self, server_id: str, server: str, fallback: ServerRequestHandler | None = None
    ) -> None:
        self.server_id = server_id
        self.server = server
        self.fallback = fallback or PolicyHandler()
        self.in_flight: list[InFlightCall] = []
        self.tools_generation = 0

    def client_options(self) -> dict[str, Any]:
        """Keyword arguments for `mcp.Client`: installing these advertises the capabilities."""
        return {
            "sampling_callback": self.on_sampling,
            "elicitation_callback": self.on_elicitation,
            "message_handler": self.on_message,
        }

    @contextlib.contextmanager
    def tracking(self, call: InFlightCall) -> Iterator[InFlightCall]:
        self.in_flight.append(call)
        try:
            yield call
        finally:
            self.in_flight.remove(call)

    async def on_message(self, message: Any) -> None:
        """Notifications and transport faults; only list_changed matters to us."""
        if isinstance(message, types.ToolListChangedNotification):
            self.tools_generation += 1  # before any await: the call's settle ping relies on it
        await anyio.lowlevel.checkpoint()

    async def on_sampling(
        self, context: Any, params: types.CreateMessageRequestParams
    ) -> types.CreateMessageResult | types.ErrorData:
        async def answer(handler: ServerRequestHandler, exchange: ServerExchange) -> BaseModel:
            reply = await handler.sample(to_sampling_request(params))
            exchange.answered_by = reply.answered_by
            exchange.prompt_tokens, exchange.completion_tokens = (
                reply.prompt_tokens,
                reply.completion_tokens,
            )
            exchange.cost_usd = reply.cost_usd
            return types.CreateMessageResult(
                role="assistant",
                content=types.TextContent(text=reply.text),
                model=reply.model,
                stop_reason=reply.stop_reason,
            )

        return await self._serve("sampling", params, answer)

    async def on_elicitation(
        self, context: Any, params: types.ElicitRequestParams
    ) -> types.ElicitResult | types.ErrorData:
        async def answer(handler: ServerRequestHandler, exchange: ServerExchange) -> BaseModel:
            reply = await handler.elicit(to_elicitation_request(params))
            exchange.answered_by, exchange.error_reason = reply.answered_by, reply.error_reason
            exchange.prompt_tokens, exchange.completion_tokens = (
                reply.prompt_tokens,
                reply.completion_tokens,
            )
            exchange.cost_usd = reply.cost_usd
            content = reply.content if reply.action == "accept" else None
            try:
                return types.ElicitResult(action=reply.action, content=content)
            except ValidationError:  # values the result type cannot carry (nested objects)
                exchange.error_reason = "invalid_elicitation_content"
                return types.ElicitResult(action="cancel")

        return await self._serve("elicitation", params, answer)

    async def _serve(
        self,
        kind: str,
        params: BaseModel,
        answer: Callable[[ServerRequestHandler, ServerExchange], Awaitable[BaseModel]],
    ) -> Any:
        """Answer through the right handler, record the exchange, never leave the server
        waiting: a refusal or a fault of ours goes back as a JSON-RPC error."""
        calls = list(self.in_flight)
        handler = next((c.handler for c in calls if c.handler is not None), self.fallback)
        exchange = ServerExchange(
            kind=kind,  # type: ignore[arg-type]
            server_id=self.server_id,
            server=self.server,
            request=wire(params),
            in_flight=len(calls),
        )
        started = time.perf_counter()
        for call in calls:
            call.hold()
        try:
            result = await answer(handler, exchange)
            exchange.response = wire(result)
        except McpError as error:
            exchange.error_reason = error.reason
            result = types.ErrorData(code=types.INVALID_REQUEST, message=f"{error.reason}: {error}")
        except Exception as error:  # our bug must not hang a server that waits for the answer
            logger.exception("answering %s of %s failed", kind, self.server)
            exchange.error_reason = "client_error"
            result = types.ErrorData(code=types.INTERNAL_ERROR, message=f"client_error: {error}")
        finally:
            for call in calls:
                call.release()
        exchange.latency_ms = round((time.perf_counter() - started) * 1000, 3)
        handler.record(exchange)
        return result


def announces_tool_changes(client: Client) -> bool:
    """Whether the server declared `tools.listChanged` in its initialize result."""
    tools = client.server_capabilities.tools
    return bool(tools is not None and tools.list_changed)


async def call_with_progress(
    client: Client,
    callbacks: SessionCallbacks,
    name: str,
    arguments: dict[str, Any],
    *,
    timeout: float,
    cap: float,
    handler: ServerRequestHandler | None,
) -> types.CallToolResult:
    """tools/call with a progress token, under an idle clock of `timeout` seconds that each
    progress notification restarts and that stops while we answer the server (the SDK's own
    read timeout, `cap`, bounds the whole call). Raises ToolTimeout when the clock runs out,
    else what the SDK raises."""
    with anyio.CancelScope(deadline=anyio.current_time() + timeout) as idle:
        call = InFlightCall(handler, idle, timeout)
        with callbacks.tracking(call):
            return await client.call_tool(
                name, arguments, read_timeout_seconds=cap, progress_callback=call.on_progress
            )
    raise ToolTimeout(f"{name}: no answer and no progress for {timeout}s")


async def ping_settles(client: Client) -> bool:
    """One ping round trip, so that whatever the server sent before its answer (a
    list_changed right after a tool result) has been read and handled; the transport keeps
    order. False when the server does not answer the ping."""
    with anyio.move_on_after(SETTLE_PING_TIMEOUT_S):
        with contextlib.suppress(
            MCPError, anyio.ClosedResourceError, anyio.BrokenResourceError, httpx2.HTTPError
        ):
            await client.session.send_ping()
            return True
    return False
