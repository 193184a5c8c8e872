"""Health check of one server: connect, list tools, make one safe call (or check schemas).

`check_server` never raises for server faults; the verdict is a `ServerCheck` record with a
reason token.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Literal

from pydantic import BaseModel, Field

from mcp_env.pool import SessionPool
from mcp_env.remote import transport_notes
from mcp_env.results import ListedTool, ToolListing, ToolResult
from mcp_env.session import AnySpec, McpSession
from toucan.errors import McpError
from toucan.records import ToolRejection

logger = logging.getLogger(__name__)

# the probe call is a liveness check; a safe read-only tool answers well within this
PROBE_TIMEOUT_S = 30.0
PROBE_TEXT_CHARS = 300


class ServerCheck(BaseModel):
    server_id: str
    name: str
    status: Literal["ok", "rejected"]
    reason: str | None = None  # snake_case token when rejected (or a note when ok)
    detail: str = ""
    connect_latency_ms: float | None = None
    transport_used: str | None = None  # None when the connection never came up
    notes: list[str] = Field(default_factory=list)  # e.g. wrong_transport, stuck_cursor
    sandbox_mode: str | None = None  # McpSession.sandbox_mode of the checked session
    tools: list[ListedTool] = Field(default_factory=list)  # usable tools only
    rejected_tools: list[ToolRejection] = Field(default_factory=list)
    probe_tool: str | None = None
    probe_result: str | None = None  # first characters of the probe's answer
    probe_is_error: bool | None = None
    schemas_checked: int = 0


def pick_probe(spec: AnySpec, tools: list[ListedTool]) -> tuple[str, dict[str, Any]] | None:
    """A call that is safe to make: spec.probe, a listed read-only tool, or a tool annotated
    readOnlyHint; the last two only if they need no arguments."""
    by_name = {tool.name: tool for tool in tools}
    if spec.probe and spec.probe.get("tool") in by_name:
        return spec.probe["tool"], dict(spec.probe.get("arguments") or {})
    candidates = [by_name[name] for name in spec.read_only_tools if name in by_name]
    candidates += [tool for tool in tools if tool.annotations.get("readOnlyHint") is True]
    for tool in candidates:
        if not tool.input_schema.get("required"):
            return tool.name, {}
    return None


async def check_server(
    spec: AnySpec,
    pool_or_session: SessionPool | McpSession,
    *,
    probe_timeout: float = PROBE_TIMEOUT_S,
) -> ServerCheck:
    """Connect (pool: with the pool's connect timeout), list tools, run the functional check.

    With a pool the server is registered and its pooled session is used (and kept); with an
    already open McpSession the connect step is skipped (connect_latency_ms stays None)."""
    verdict = ServerCheck(server_id=spec.server_id, name=spec.name, status="rejected")
    try:
        if isinstance(pool_or_session, SessionPool):
            started = time.perf_counter()
            async with pool_or_session.session_for(pool_or_session.register(spec)) as session:
                verdict.connect_latency_ms = (time.perf_counter() - started) * 1000
                verdict.sandbox_mode = session.sandbox_mode
        else:
            session = pool_or_session
            verdict.sandbox_mode = session.sandbox_mode
        verdict.transport_used = session.transport_used
        verdict = with_listing(verdict, spec, await listing_of(pool_or_session, spec))
        if not verdict.tools:
            reason = "no_usable_tools" if verdict.rejected_tools else "no_tools"
            return verdict.model_copy(update={"reason": reason})
        probe = pick_probe(spec, verdict.tools)
        if probe is None:
            return check_schemas_only(verdict)
        return await run_probe(verdict, pool_or_session, probe, probe_timeout)
    except McpError as error:
        return verdict.model_copy(update={"reason": error.reason, "detail": str(error)[:2000]})
    except Exception as error:  # a server fault we did not foresee must not stop onboarding
        logger.exception("health check of %s failed unexpectedly", spec.name)
        return verdict.model_copy(update={"reason": "unexpected_error", "detail": repr(error)})


async def listing_of(target: SessionPool | McpSession, spec: AnySpec) -> ToolListing:
    if isinstance(target, McpSession):
        return await target.read_tool_listing()
    return await target.tool_listing(spec.server_id)


def with_listing(verdict: ServerCheck, spec: AnySpec, listing: ToolListing) -> ServerCheck:
    """The verdict with the listing's tools, rejections and notes, and the transport notes;
    `detail` puts the notes in words (a later failure's detail replaces it)."""
    used = verdict.transport_used or spec.transport
    notes = [*transport_notes(spec, used), *listing.notes]
    words = [f"declared {spec.transport}, speaks {used}"] if "wrong_transport" in notes else []
    words += [f"{len(listing.rejected)} tool(s) rejected"] if listing.rejected else []
    words += listing.notes
    return verdict.model_copy(
        update={
            "notes": notes,
            "tools": listing.tools,
            "rejected_tools": listing.rejected,
            "detail": "; ".join(words),
        }
    )


def check_schemas_only(verdict: ServerCheck) -> ServerCheck:
    """No safe call to make: the listing already checked every schema (mcp_env/listing.py)
    and left out the tools whose schemas are unusable."""
    checked = len(verdict.tools) + len(verdict.rejected_tools)
    update = {"schemas_checked": checked, "status": "ok", "reason": "schemas_only"}
    return verdict.model_copy(update=update)


async def run_probe(
    verdict: ServerCheck,
    target: SessionPool | McpSession,
    probe: tuple[str, dict[str, Any]],
    timeout: float,
) -> ServerCheck:
    tool_name, arguments = probe
    update: dict[str, Any] = {"probe_tool": tool_name}
    try:
        if isinstance(target, McpSession):
            result: ToolResult = await target.call_tool(tool_name, arguments, timeout=timeout)
        else:
            result = await target.call_tool(
                verdict.server_id, tool_name, arguments, timeout=timeout
            )
    except McpError as error:
        update |= {"reason": f"probe_{error.reason}", "detail": str(error)[:2000]}
        return verdict.model_copy(update=update)
    update |= {"probe_result": result.text[:PROBE_TEXT_CHARS], "probe_is_error": result.is_error}
    if result.is_error:
        update |= {"reason": "probe_failed", "detail": result.text[:2000]}
    else:
        update |= {"status": "ok"}
    return verdict.model_copy(update=update)
