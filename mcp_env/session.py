"""One way to reach an MCP server, whatever its transport: `async with open_session(spec)`.

The session speaks our records (`ListedTool`, `ToolResult`) and our errors (McpError tree);
SDK exceptions are translated here, where they enter our code. Third-party servers are
connected in legacy mode (initialize handshake, no `server/discover` probe: some 1.x servers
crash on it).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import httpx2
from mcp import Client
from mcp.shared.exceptions import MCPError
from mcp_types import (
    CONNECTION_CLOSED,
    INVALID_PARAMS,
    METHOD_NOT_FOUND,
    REQUEST_TIMEOUT,
    PaginatedRequestParams,
)
from pydantic import ValidationError

from mcp_env.remote import make_http_client, read_tail, remove_sandbox_log, start_launch
from mcp_env.results import ListedTool, ToolResult, make_listed_tool, make_tool_result
from mcp_env.sandbox import prepare_launch, remove_sandbox, substitute_vars
from mcp_env.specs import HttpSpec, SseSpec, StdioSpec
from mcp_env.transport import ProcessTransport
from toucan.errors import McpError, ServerCrashed, ServerStartError, ToolListError, ToolTimeout

# spawn + handshake: typical Python servers take 0.5-1.2 s, basic-memory up to 6 s
CONNECT_TIMEOUT_S = 30.0
# a tool call that takes longer than this is treated as hung
CALL_TIMEOUT_S = 60.0
# backstop over the SDK's own per-request timeout
CALL_TIMEOUT_SLACK_S = 2.0
# list_tools is cheap; a server that needs longer is broken
LIST_TOOLS_TIMEOUT_S = 30.0
# pagination guard: a server whose cursor never ends cannot hang the listing
MAX_TOOL_PAGES = 100
ERROR_REASONS = {INVALID_PARAMS: "invalid_params", METHOD_NOT_FOUND: "method_not_found"}

AnySpec = StdioSpec | HttpSpec | SseSpec


class McpSession:
    """A live connection to one server. Obtain it from `open_session` or the pool."""

    def __init__(self, spec: AnySpec, client: Client, process_probe: Any = None) -> None:
        self.spec = spec
        self.server_id = spec.server_id
        self._client = client
        self._process_probe = process_probe  # object with .process (ours) or None (remote)
        self._connection_lost = False

    @property
    def sandbox_dir(self) -> str | None:
        """The server's private working dir (None for a remote server)."""
        launch = getattr(self._process_probe, "launch", None)
        return launch.sandbox_dir if launch is not None else None

    @property
    def sandbox_mode(self) -> str | None:
        """How the server process is confined: bwrap, or helper (weaker; see
        mcp_env/confine.py); None for a remote server."""
        launch = getattr(self._process_probe, "launch", None)
        return launch.sandbox_mode if launch is not None else None

    def fill_arguments(self, arguments: Any) -> Any:
        """Replace `{sandbox}` (and `{port}`) in string arguments, at any depth, so catalog
        probes and seeded tasks can name files inside this session's sandbox."""
        launch = getattr(self._process_probe, "launch", None)
        if launch is None:
            return arguments
        values = {"sandbox": launch.sandbox_dir, "port": str(launch.port)}
        return substitute_vars(arguments, values)

    @property
    def pid(self) -> int | None:
        process = getattr(self._process_probe, "process", None)
        return process.pid if process is not None else None

    def is_alive(self) -> bool:
        """False once the connection closed or the server process exited."""
        process = getattr(self._process_probe, "process", None)
        exited = process is not None and process.returncode is not None
        return not (self._connection_lost or exited)

    async def list_tools(self, *, timeout: float = LIST_TOOLS_TIMEOUT_S) -> list[ListedTool]:
        """Every tool, all pages. Raises ToolListError (malformed/timeout) or ServerCrashed."""
        tools: list[ListedTool] = []
        cursor: str | None = None
        try:
            with anyio.fail_after(timeout):
                for _ in range(MAX_TOOL_PAGES):
                    page = await self._client.session.list_tools(
                        params=PaginatedRequestParams(cursor=cursor) if cursor else None
                    )
                    tools += [self._to_listed_tool(tool) for tool in page.tools]
                    cursor = page.next_cursor
                    if not cursor:
                        break
        except TimeoutError as error:
            raise ToolListError("tools/list timed out", reason="list_tools_timeout") from error
        except ValidationError as error:
            raise ToolListError(str(error)[:500], reason="malformed_tool_list") from error
        except MCPError as error:
            self._raise_if_crashed(error)
            raise ToolListError(str(error), reason="list_tools_failed") from error
        except (anyio.ClosedResourceError, anyio.BrokenResourceError, httpx2.HTTPError) as error:
            self._connection_lost = True
            raise ServerCrashed(str(error) or type(error).__name__) from error
        return tools

    @staticmethod
    def _to_listed_tool(tool: Any) -> ListedTool:
        annotations = tool.annotations.model_dump(exclude_none=True) if tool.annotations else {}
        return make_listed_tool(tool.name, tool.description, tool.input_schema, annotations)

    async def call_tool(
        self, name: str, arguments: dict[str, Any] | None = None, *, timeout: float = CALL_TIMEOUT_S
    ) -> ToolResult:
        """Call one tool. Tool failures come back as ToolResult(is_error=True); raises only
        ToolTimeout (the session stays usable) or ServerCrashed (it does not)."""
        started = time.perf_counter()
        try:
            with anyio.fail_after(timeout + CALL_TIMEOUT_SLACK_S):
                raw = await self._client.call_tool(
                    name, self.fill_arguments(arguments or {}), read_timeout_seconds=timeout
                )
        except TimeoutError as error:
            raise ToolTimeout(f"{name} took longer than {timeout}s") from error
        except ValidationError as error:
            return self._error_result(
                f"malformed tool result: {error}", "malformed_result", started
            )
        except MCPError as error:
            self._raise_if_crashed(error)
            if error.code == REQUEST_TIMEOUT:
                raise ToolTimeout(str(error)) from error
            reason = ERROR_REASONS.get(error.code, "server_error")
            return self._error_result(str(error), reason, started)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError, httpx2.HTTPError) as error:
            self._connection_lost = True
            raise ServerCrashed(str(error) or type(error).__name__) from error
        latency_ms = (time.perf_counter() - started) * 1000
        return make_tool_result(raw.content, raw.structured_content, raw.is_error, latency_ms)

    def _raise_if_crashed(self, error: MCPError) -> None:
        if error.code == CONNECTION_CLOSED or not self.is_alive():
            self._connection_lost = True
            raise ServerCrashed(f"{self.spec.name}: {error}") from error

    @staticmethod
    def _error_result(message: str, reason: str, started: float) -> ToolResult:
        latency_ms = (time.perf_counter() - started) * 1000
        return ToolResult(
            text=message,
            is_error=True,
            content_types=["text"],
            original_chars=len(message),
            latency_ms=latency_ms,
            error_reason=reason,
        )


@contextlib.asynccontextmanager
async def open_session(
    spec: AnySpec,
    *,
    sandbox_root: Path | None = None,
    seed_dir: Path | None = None,
    fleet_dir: Path | None = None,
    connect_timeout: float = CONNECT_TIMEOUT_S,
    isolation: str | None = None,
) -> AsyncIterator[McpSession]:
    """Start (stdio, or an HTTP spec's `launch`) and connect; on exit shut everything down
    and remove the sandbox. Raises ServerStartError with a reason token when it cannot."""
    sandbox_options = {
        "sandbox_root": sandbox_root,
        "seed_dir": seed_dir,
        "fleet_dir": fleet_dir,
        "isolation": isolation,
    }
    try:
        async with _connect(spec, sandbox_options, connect_timeout) as session:
            yield session
    except BaseExceptionGroup as group:
        # task groups inside the SDK wrap what our caller raised in the body; unwrap it
        raise unwrap_group(group) from None


def unwrap_group(group: BaseExceptionGroup) -> BaseException:
    """The one meaningful exception in a group (ignoring cancellations), else the group."""
    leaves = [
        leaf
        for leaf in flatten_exceptions(group)
        if not isinstance(leaf, anyio.get_cancelled_exc_class())
    ]
    return leaves[0] if len(leaves) == 1 else group


@contextlib.asynccontextmanager
async def _connect(
    spec: AnySpec, sandbox_options: dict[str, Any], connect_timeout: float
) -> AsyncIterator[McpSession]:
    async with contextlib.AsyncExitStack() as stack:
        if isinstance(spec, StdioSpec):
            launch = prepare_launch(spec, **sandbox_options)
            stack.callback(remove_sandbox, launch.sandbox_dir)
            probe = ProcessTransport(launch, Path(launch.sandbox_dir + ".stderr.log"))
            stack.callback(remove_sandbox_log, probe.stderr_path)
            client = Client(probe, mode="legacy", cache=None, read_timeout_seconds=connect_timeout)
        else:
            probe, url = await start_launch(spec, stack, sandbox_options, connect_timeout)
            client = await make_http_client(spec, url, stack, connect_timeout)
        await connect_client(client, stack, probe, connect_timeout, spec.name)
        yield McpSession(spec, client, probe)


async def connect_client(
    client: Client,
    stack: contextlib.AsyncExitStack,
    probe: Any,
    connect_timeout: float,
    server_name: str,
) -> None:
    """Run the handshake under a deadline, translating every failure to ServerStartError."""
    # no fail_after here: the client enters task groups, which must not straddle a cancel
    # scope; the deadline is the client's read timeout on the initialize request instead
    try:
        await stack.enter_async_context(client)
    except Exception as error:  # SDK/transport faults arrive as groups of assorted types
        leaves = list(flatten_exceptions(error))
        for leaf in leaves:
            if isinstance(leaf, ServerStartError):
                raise leaf from error
        reason = "connect_failed"
        if any(isinstance(leaf, MCPError) and leaf.code == REQUEST_TIMEOUT for leaf in leaves):
            reason = "initialize_timeout"
        elif any(isinstance(leaf, (httpx2.HTTPError, OSError)) for leaf in leaves):
            reason = "connection_refused"
        raise start_error(probe, server_name, reason, error) from error


def start_error(probe: Any, server_name: str, reason: str, error: BaseException) -> McpError:
    if getattr(probe, "exited_before_stop", False):
        reason = "crashed_at_start"
    tail = read_tail(probe.stderr_path) if probe is not None else ""
    leaf = next(iter(flatten_exceptions(error)), error)
    return ServerStartError(f"{server_name}: {reason}: {leaf!r} {tail}".strip(), reason=reason)


def flatten_exceptions(error: BaseException):
    if isinstance(error, BaseExceptionGroup):
        for inner in error.exceptions:
            yield from flatten_exceptions(inner)
    else:
        yield error
