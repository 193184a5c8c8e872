"""One way to reach an MCP server, whatever its transport: `async with open_session(spec)`.

The session speaks our records (`ListedTool`, `ToolResult`) and our errors (McpError tree);
SDK exceptions are translated here, where they enter our code. Third-party servers are
connected in legacy mode (initialize handshake, no `server/discover` probe: some 1.x servers
crash on it).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import httpx2
from mcp import Client
from mcp.shared.exceptions import MCPError
from mcp_types import CONNECTION_CLOSED, INVALID_PARAMS, METHOD_NOT_FOUND, REQUEST_TIMEOUT
from pydantic import ValidationError

from mcp_env.client_callbacks import (
    SessionCallbacks,
    announces_tool_changes,
    call_with_progress,
    ping_settles,
)
from mcp_env.handshake import connect_client, unwrap_group
from mcp_env.limits import DEFAULT_LIMITS
from mcp_env.listing import build_listing, next_cursor, page_tools
from mcp_env.remote import connect_remote, remove_sandbox_log, start_launch
from mcp_env.results import (
    ListedTool,
    ToolListing,
    ToolResult,
    make_tool_result,
)
from mcp_env.sandbox import prepare_launch, remove_sandbox, substitute_vars
from mcp_env.sdk_seams import request_tools_page, take_over_output_checks
from mcp_env.server_requests import ServerRequestHandler
from mcp_env.specs import HttpSpec, SseSpec, StdioSpec
from mcp_env.transport import JUNK_REPLY_CODE, ProcessTransport
from toucan.config import LimitsConfig
from toucan.errors import JunkReply, ServerCrashed, ToolListError, ToolTimeout

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

logger = logging.getLogger(__name__)


class McpSession:
    """A live connection to one server. Obtain it from `open_session` or the pool."""

    def __init__(
        self,
        spec: AnySpec,
        client: Client,
        process_probe: Any = None,
        *,
        transport_used: str | None = None,
        callbacks: SessionCallbacks | None = None,
    ) -> None:
        self.spec = spec
        self.server_id = spec.server_id
        # what the connection speaks; differs from spec.transport after a fallback
        self.transport_used = transport_used or spec.transport
        self._client = client
        self._process_probe = process_probe  # object with .process (ours) or None (remote)
        self._callbacks = callbacks or SessionCallbacks(spec.server_id, spec.name)
        self._connection_lost = False
        self._settle_by_ping = announces_tool_changes(client)
        self._listing: ToolListing | None = None  # this session's last listing
        self._listing_failed = False
        self._listing_lock = anyio.Lock()
        self.limits = DEFAULT_LIMITS  # size caps on the tools it lists (open_session sets)

    @property
    def tools_generation(self) -> int:
        """How many `notifications/tools/list_changed` this session has received."""
        return self._callbacks.tools_generation

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
        """The usable tools, all pages (see `read_tool_listing`)."""
        return (await self.read_tool_listing(timeout=timeout)).tools

    async def read_tool_listing(self, *, timeout: float = LIST_TOOLS_TIMEOUT_S) -> ToolListing:
        """Every page of `tools/list`, each tool judged alone (mcp_env/listing.py): usable
        tools, rejected tools with reasons, notes. Raises ToolListError (a page that is not a
        tool list: malformed_tool_list; list_tools_timeout; list_tools_failed) or
        ServerCrashed."""
        pages: list[list[Any]] = []
        notes: list[str] = []
        try:
            with anyio.fail_after(timeout):
                await self._read_pages(pages, notes, timeout)
        except TimeoutError as error:
            raise ToolListError("tools/list timed out", reason="list_tools_timeout") from error
        except MCPError as error:
            self._raise_if_crashed(error)
            raise ToolListError(str(error), reason="list_tools_failed") from error
        except (anyio.ClosedResourceError, anyio.BrokenResourceError, httpx2.HTTPError) as error:
            self._connection_lost = True
            raise ServerCrashed(str(error) or type(error).__name__) from error
        listing = build_listing(pages, notes, self.limits)
        take_over_output_checks(self._client, _names(pages))
        self._listing = listing
        return listing

    async def _read_pages(self, pages: list[list[Any]], notes: list[str], timeout: float) -> None:
        cursor: str | None = None
        seen: set[str] = set()
        for _ in range(MAX_TOOL_PAGES):
            page = await request_tools_page(self._client, cursor, timeout)
            pages.append(page_tools(page))
            cursor, note = next_cursor(page, seen)
            if note is not None:
                notes.append(note)
            if cursor is None:
                return
        notes.append("page_limit")

    async def call_tool(
        self,
        name: str,
        arguments: dict[str, Any] | None = None,
        *,
        timeout: float = CALL_TIMEOUT_S,
        timeout_max: float | None = None,
        handler: ServerRequestHandler | None = None,
    ) -> ToolResult:
        """Call one tool. Tool failures come back as ToolResult(is_error=True); a result that
        misses the tool's `outputSchema` is kept with a `note`. Raises only ToolTimeout or
        JunkReply (the session stays usable) or ServerCrashed (it does not).

        Every call carries a progress token (spec 2025-06-18, "Utilities > Progress"): the
        call times out after `timeout` seconds without an answer, a progress notification or
        a request of the server's, and after `timeout_max` seconds (default `timeout`) in
        all. Sampling and elicitation requests made meanwhile go to `handler` (else the
        session's fallback)."""
        output_schema = await self._output_schema_of(name, timeout)
        started = time.perf_counter()
        cap = max(timeout, timeout_max or timeout)
        noise_before = self.noise_lines
        try:
            with anyio.fail_after(cap + CALL_TIMEOUT_SLACK_S):
                raw = await self._call_with_progress(name, arguments, timeout, cap, handler)
        except TimeoutError as error:
            timeout_error = ToolTimeout(f"{name} took longer than {cap}s")
            raise self._no_answer(timeout_error, noise_before) from error
        except ToolTimeout as error:  # no answer and no progress (client_callbacks.py)
            raise self._no_answer(error, noise_before) from error
        except ValidationError as error:
            return self._error_result(
                f"malformed tool result: {error}", "malformed_result", started
            )
        except RuntimeError as error:  # SDK result checks (output schema: taken over) backstop
            return self._error_result(str(error), "result_rejected_by_sdk", started)
        except MCPError as error:
            self._raise_if_crashed(error)
            if error.code == JUNK_REPLY_CODE:
                raise JunkReply(f"{name}: {error}") from error
            if error.code == REQUEST_TIMEOUT:
                raise self._no_answer(ToolTimeout(str(error)), noise_before) from error
            reason = ERROR_REASONS.get(error.code, "server_error")
            return self._error_result(str(error), reason, started)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError, httpx2.HTTPError) as error:
            self._connection_lost = True
            raise ServerCrashed(str(error) or type(error).__name__) from error
        latency_ms = (time.perf_counter() - started) * 1000
        return make_tool_result(
            raw.content, raw.structured_content, raw.is_error, latency_ms, output_schema
        )

    async def _output_schema_of(self, name: str, timeout: float) -> dict[str, Any] | None:
        """The tool's kept `outputSchema`, listing once on a session that has not listed yet
        (as the SDK itself would before its result check, but tolerantly)."""
        async with self._listing_lock:
            if self._listing is None and not self._listing_failed:
                try:
                    await self.read_tool_listing(timeout=min(timeout, LIST_TOOLS_TIMEOUT_S))
                except ToolListError:
                    self._listing_failed = True  # the call goes ahead, unchecked
        take_over_output_checks(self._client, [name])
        return self._listing.output_schemas.get(name) if self._listing else None

    async def _call_with_progress(
        self,
        name: str,
        arguments: dict[str, Any] | None,
        timeout: float,
        cap: float,
        handler: ServerRequestHandler | None,
    ) -> Any:
        raw = await call_with_progress(
            self._client,
            self._callbacks,
            name,
            self.fill_arguments(arguments or {}),
            timeout=timeout,
            cap=cap,
            handler=handler,
        )
        if self._settle_by_ping and not await ping_settles(self._client):
            self._settle_by_ping = False  # a server that cannot ping is not asked again
            logger.info("%s did not answer a ping; its tool changes may show late", self.spec.name)
        return raw

    @property
    def noise_lines(self) -> int:
        """Lines the server wrote on stdout that were not JSON-RPC (0 for a remote server)."""
        return getattr(self._process_probe, "noise_lines", 0)

    def _no_answer(self, timeout: ToolTimeout, noise_before: int) -> ToolTimeout | JunkReply:
        """A call that got no valid answer in time: junk when the server wrote lines that are
        not JSON-RPC meanwhile (its answer, most likely), else the timeout."""
        junk = self.noise_lines - noise_before
        if junk > 0:
            return JunkReply(f"{timeout}; {junk} junk line(s) on stdout instead of a reply")
        return timeout

    def _raise_if_crashed(self, error: MCPError) -> None:
        if error.code == CONNECTION_CLOSED or not self.is_alive():
            self._connection_lost = True
            raise ServerCrashed(f"{self.spec.name}: {error}") from error

    @staticmethod
    def _error_result(message: str, reason: str, started: float) -> ToolResult:
        return ToolResult.failure(message, reason, (time.perf_counter() - started) * 1000)


@contextlib.asynccontextmanager
async def open_session(
    spec: AnySpec,
    *,
    sandbox_root: Path | None = None,
    seed_dir: Path | None = None,
    fleet_dir: Path | None = None,
    connect_timeout: float = CONNECT_TIMEOUT_S,
    isolation: str | None = None,
    server_requests: ServerRequestHandler | None = None,
    limits: LimitsConfig = DEFAULT_LIMITS,
) -> AsyncIterator[McpSession]:
    """Start (stdio, or an HTTP spec's `launch`) and connect; on exit shut everything down
    and remove the sandbox. Raises ServerStartError with a reason token when it cannot.

    The session advertises sampling and elicitation; `server_requests` answers them when no
    tool call with a handler of its own is in flight (default: `PolicyHandler()`, which
    refuses sampling and declines elicitation). `limits` caps the tools it lists
    (mcp_env/limits.py)."""
    callbacks = SessionCallbacks(spec.server_id, spec.name, server_requests)
    sandbox_options = {
        "sandbox_root": sandbox_root,
        "seed_dir": seed_dir,
        "fleet_dir": fleet_dir,
        "isolation": isolation,
    }
    try:
        async with _connect(spec, sandbox_options, connect_timeout, callbacks) as session:
            session.limits = limits
            yield session
    except BaseExceptionGroup as group:
        # task groups inside the SDK wrap what our caller raised in the body; unwrap it
        raise unwrap_group(group) from None


@contextlib.asynccontextmanager
async def _connect(
    spec: AnySpec,
    sandbox_options: dict[str, Any],
    connect_timeout: float,
    callbacks: SessionCallbacks,
) -> AsyncIterator[McpSession]:
    async with contextlib.AsyncExitStack() as stack:
        if isinstance(spec, StdioSpec):
            launch = prepare_launch(spec, **sandbox_options)
            stack.callback(remove_sandbox, launch.sandbox_dir)
            probe = ProcessTransport(launch, Path(launch.sandbox_dir + ".stderr.log"))
            stack.callback(remove_sandbox_log, probe.stderr_path)
            client = Client(
                probe,
                mode="legacy",
                cache=None,
                read_timeout_seconds=connect_timeout,
                **callbacks.client_options(),
            )
            await connect_client(client, stack, probe, connect_timeout, spec.name)
            transport_used = spec.transport
        else:
            probe, url = await start_launch(spec, stack, sandbox_options, connect_timeout)
            client, transport_used = await connect_remote(
                spec, url, stack, connect_timeout, probe, callbacks.client_options()
            )
        yield McpSession(spec, client, probe, transport_used=transport_used, callbacks=callbacks)


def _names(pages: list[list[Any]]) -> list[str]:
    """Every name a listing carried, rejected tools included: the SDK must not re-list for any."""
    return [
        raw["name"]
        for page in pages
        for raw in page
        if isinstance(raw, dict) and isinstance(raw.get("name"), str)
    ]
