"""A pool of long-lived MCP sessions, one per server, shared by every caller in the process.

Contract:
- `async with SessionPool(...) as pool:` owns every server process it starts; leaving the
  block (or `aclose()`) shuts them all down, also when the surrounding task is cancelled.
- `pool.register(spec) -> server_id`; every other method takes a registered server_id.
- The first caller for a server connects; concurrent callers wait on that same connect
  (and on the same `list_tools`), never starting a second process.
- At most `max_concurrency` calls run at once per server (an asyncio semaphore).
- A call that finds the server crashed raises ServerCrashed; the next call starts a fresh
  session. After `max_restarts` restarts (or a failed start) the server is dead: every later
  call raises ServerStartError with reason from `dead_reason(server_id)`.
- Results longer than `max_result_chars` are cut with a visible marker; listings are held to
  `limits` (mcp_env/limits.py).
- A call times out after `call_timeout` seconds without progress, `call_timeout_max` in all;
  server requests during a call go to the call's `handler`, else to `server_requests`.
- A server's tools are listed again once it sent `notifications/tools/list_changed`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import TaskGroup, TaskStatus

from mcp_env.limits import DEFAULT_LIMITS
from mcp_env.results import ListedTool, ToolListing, ToolResult, truncate_result
from mcp_env.sandbox import prepare_sandboxes
from mcp_env.server_requests import ServerRequestHandler
from mcp_env.session import (
    CALL_TIMEOUT_S,
    CONNECT_TIMEOUT_S,
    AnySpec,
    McpSession,
    open_session,
    unwrap_group,
)
from toucan.config import LimitsConfig
from toucan.errors import McpError, ServerCrashed, ServerStartError

logger = logging.getLogger(__name__)

# a tool result longer than this is cut before it reaches a model context
MAX_RESULT_CHARS = 20_000
DEFAULT_MAX_CONCURRENCY = 4
DEFAULT_MAX_RESTARTS = 2


class _ServerSlot:
    """Per-server state: the live session, its owner task, locks and counters."""

    def __init__(self, spec: AnySpec, max_concurrency: int) -> None:
        self.spec = spec
        self.session: McpSession | None = None
        self.close_event: anyio.Event | None = None
        self.closed_event: anyio.Event | None = None
        self.connect_lock = asyncio.Lock()
        self.list_lock = asyncio.Lock()
        self.calls = asyncio.Semaphore(max_concurrency)
        self.listing: ToolListing | None = None
        self.listing_generation = 0  # the session's list_changed count when it was listed
        self.kept_listing: ToolListing | None = None  # see list_tools_then_stop
        self.starts = 0
        self.dead_reason: str | None = None
        self.dead_detail = ""


class SessionPool:
    """Long-lived MCP sessions keyed by server id; see the module docstring for the contract."""

    def __init__(
        self,
        *,
        sandbox_root: Path | None = None,
        seed_dir: Path | None = None,
        fleet_dir: Path | None = None,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        max_restarts: int = DEFAULT_MAX_RESTARTS,
        connect_timeout: float = CONNECT_TIMEOUT_S,
        call_timeout: float = CALL_TIMEOUT_S,
        call_timeout_max: float | None = None,
        max_result_chars: int = MAX_RESULT_CHARS,
        server_requests: ServerRequestHandler | None = None,
        limits: LimitsConfig = DEFAULT_LIMITS,
    ) -> None:
        self.sandbox_root = sandbox_root
        self.seed_dir = seed_dir
        self.fleet_dir = fleet_dir
        self.max_concurrency = max_concurrency
        self.max_restarts = max_restarts
        self.connect_timeout = connect_timeout
        self.call_timeout = call_timeout
        self.call_timeout_max = call_timeout_max
        self.max_result_chars = max_result_chars
        self.server_requests = server_requests
        self.limits = limits
        self._slots: dict[str, _ServerSlot] = {}
        self._task_group: TaskGroup | None = None
        self._isolation: str | None = None
        self._isolation_known = False

    async def __aenter__(self) -> SessionPool:
        self._task_group = await anyio.create_task_group().__aenter__()
        return self

    async def __aexit__(self, *exc_info: Any) -> bool | None:
        await self.aclose()  # shielded: runs to the end even when we are being cancelled
        task_group, self._task_group = self._task_group, None
        assert task_group is not None
        task_group.cancel_scope.cancel()
        try:
            return await task_group.__aexit__(*exc_info)
        except BaseExceptionGroup as group:
            raise unwrap_group(group) from None

    def register(self, spec: AnySpec) -> str:
        """Make a server known to the pool (idempotent); nothing starts until first use."""
        server_id = spec.server_id
        if server_id not in self._slots:
            self._slots[server_id] = _ServerSlot(spec, self.max_concurrency)
        return server_id

    def prestart(self, server_id: str) -> None:
        """Start a server in the background now instead of at its first call: an agent's first
        model turn takes about as long as a server's start, so the two overlap. A failure is
        kept on the slot and reported by the first call, with its reason."""
        if self._task_group is None:
            raise RuntimeError("SessionPool must be entered with `async with` before use")
        self._task_group.start_soon(self._prestart, self._slots[server_id])

    async def _prestart(self, slot: _ServerSlot) -> None:
        try:
            await self._ensure_session(slot)
        except Exception as error:  # the pool's task group must outlive one bad server
            logger.info("pre-starting %s failed: %s", slot.spec.name, error)

    def dead_reason(self, server_id: str) -> str | None:
        return self._slots[server_id].dead_reason

    def server_pid(self, server_id: str) -> int | None:
        session = self._slots[server_id].session
        return session.pid if session is not None else None

    async def list_tools(self, server_id: str) -> list[ListedTool]:
        """The server's usable tools, listed once per session (and again after the server
        announced a change) and shared by concurrent callers; tools the listing rejected are
        never among them."""
        return (await self.tool_listing(server_id)).tools

    async def tool_listing(self, server_id: str) -> ToolListing:
        """The server's whole listing (usable tools, rejected tools, notes), once per session
        and again after each `notifications/tools/list_changed`."""
        slot = self._slots[server_id]
        async with slot.list_lock:
            session = await self._ensure_session(slot)
            if slot.listing is None or slot.listing_generation != session.tools_generation:
                generation = session.tools_generation
                listing = session.read_tool_listing()
                slot.listing = await self._guard_crash(slot, session, listing)
                slot.listing_generation = generation
            return slot.listing

    def tools_generation(self, server_id: str) -> int:
        """How often the server's live session announced a tool-list change (0 if none)."""
        session = self._slots[server_id].session
        return session.tools_generation if session is not None else 0

    async def list_tools_then_stop(self, server_id: str) -> list[ListedTool]:
        """The server's tools, listed once and kept after its session is stopped (in the
        background): for servers whose calls run on sessions elsewhere, e.g. one per
        trajectory, so that no idle process stays up just to have been listed."""
        slot = self._slots[server_id]
        async with slot.list_lock:
            if slot.kept_listing is None:
                session = await self._ensure_session(slot)
                listing = session.read_tool_listing()
                slot.kept_listing = await self._guard_crash(slot, session, listing)
                assert self._task_group is not None
                self._task_group.start_soon(self._stop_session, slot, session)
            return slot.kept_listing.tools

    async def call_tool(
        self,
        server_id: str,
        name: str,
        arguments: dict[str, Any] | None = None,
        *,
        timeout: float | None = None,
        handler: ServerRequestHandler | None = None,
    ) -> ToolResult:
        """One tool call on the server's pooled session; see the module docstring."""
        slot = self._slots[server_id]
        async with slot.calls:
            session = await self._ensure_session(slot)
            call = session.call_tool(
                name,
                arguments,
                timeout=timeout or self.call_timeout,
                timeout_max=self.call_timeout_max,
                handler=handler,
            )
            result = await self._guard_crash(slot, session, call)
        return truncate_result(result, self.max_result_chars)

    @contextlib.asynccontextmanager
    async def session_for(self, server_id: str) -> AsyncIterator[McpSession]:
        """The live session itself, for callers that need one server state across calls
        (multi-turn). Calls made on it bypass the pool's truncation and concurrency cap."""
        slot = self._slots[server_id]
        yield await self._ensure_session(slot)

    async def aclose(self) -> None:
        """Shut every session down (close stdin, wait, kill the tree) and forget them; all
        servers stop in parallel, so closing N servers costs one grace period, not N."""
        with anyio.CancelScope(shield=True):
            async with anyio.create_task_group() as task_group:
                for slot in self._slots.values():
                    task_group.start_soon(self._stop_session, slot)

    async def _guard_crash(self, slot: _ServerSlot, session: McpSession, work: Any) -> Any:
        try:
            return await work
        except ServerCrashed:
            logger.warning("server %s crashed; the next call restarts it", slot.spec.name)
            await self._stop_session(slot, only=session)
            raise

    async def _ensure_session(self, slot: _ServerSlot) -> McpSession:
        async with slot.connect_lock:
            if slot.session is not None and not slot.session.is_alive():
                await self._stop_session(slot, only=slot.session)
            if slot.dead_reason is not None:
                raise ServerStartError(slot.dead_detail, reason=slot.dead_reason)
            if slot.session is None:
                if slot.starts > self.max_restarts:
                    self._mark_dead(slot, "too_many_restarts", f"restarted {slot.starts - 1}x")
                    raise ServerStartError(slot.dead_detail, reason=slot.dead_reason)
                slot.starts += 1
                try:
                    slot.session = await self._start_session(slot)
                except ServerStartError as error:
                    self._mark_dead(slot, error.reason, str(error))
                    raise
            return slot.session

    def _mark_dead(self, slot: _ServerSlot, reason: str, detail: str) -> None:
        slot.dead_reason = reason
        slot.dead_detail = detail
        logger.warning("server %s is dead: %s (%s)", slot.spec.name, reason, detail[:300])

    async def _start_session(self, slot: _ServerSlot) -> McpSession:
        if self._task_group is None:
            raise RuntimeError("SessionPool must be entered with `async with` before use")
        if not self._isolation_known:
            self._isolation = await anyio.to_thread.run_sync(prepare_sandboxes, self.sandbox_root)
            self._isolation_known = True
        slot.close_event = anyio.Event()
        slot.closed_event = anyio.Event()
        slot.listing = None
        return await self._task_group.start(self._own_session, slot)

    async def _own_session(self, slot: _ServerSlot, *, task_status: TaskStatus) -> None:
        """Runs in the pool's task group: sessions must be entered and left by one task."""
        assert slot.close_event is not None and slot.closed_event is not None
        close_event, closed_event = slot.close_event, slot.closed_event
        started = False
        try:
            async with open_session(
                slot.spec,
                sandbox_root=self.sandbox_root,
                seed_dir=self.seed_dir,
                fleet_dir=self.fleet_dir,
                connect_timeout=self.connect_timeout,
                isolation=self._isolation,
                server_requests=self.server_requests,
                limits=self.limits,
            ) as session:
                task_status.started(session)
                started = True
                await close_event.wait()
        except McpError:
            if not started:
                raise
            logger.info("session of %s ended with an error on close", slot.spec.name)
        except Exception:
            if not started:
                raise
            logger.exception("closing the session of %s failed", slot.spec.name)
        finally:
            closed_event.set()

    async def _stop_session(self, slot: _ServerSlot, only: McpSession | None = None) -> None:
        if slot.session is None or (only is not None and slot.session is not only):
            return
        close_event, closed_event = slot.close_event, slot.closed_event
        slot.session = None
        slot.listing = None
        if close_event is not None and closed_event is not None:
            close_event.set()
            await closed_event.wait()
