"""The MCP handshake and what its failures mean: every fault while connecting becomes a
ServerStartError with a reason token (connect_failed, initialize_timeout, http_error,
connection_refused, crashed_at_start), with the server's stderr tail when we started it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx2
from mcp import Client
from mcp.shared.exceptions import MCPError
from mcp_types import REQUEST_TIMEOUT

from toucan.errors import McpError, ServerStartError

STDERR_TAIL_CHARS = 2000


def unwrap_group(group: BaseExceptionGroup) -> BaseException:
    """The one meaningful exception in a group (ignoring cancellations), else the group."""
    leaves = [
        leaf
        for leaf in flatten_exceptions(group)
        if not isinstance(leaf, anyio.get_cancelled_exc_class())
    ]
    return leaves[0] if len(leaves) == 1 else group


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
        elif any(isinstance(leaf, httpx2.HTTPStatusError) for leaf in leaves):
            reason = "http_error"  # the server answered, with an HTTP error status
        elif any(isinstance(leaf, (httpx2.HTTPError, OSError)) for leaf in leaves):
            reason = "connection_refused"
        raise start_error(probe, server_name, reason, error) from error


def start_error(probe: Any, server_name: str, reason: str, error: BaseException) -> McpError:
    """A ServerStartError naming the first underlying fault and the server's stderr tail."""
    if getattr(probe, "exited_before_stop", False):
        reason = "crashed_at_start"
    tail = read_tail(probe.stderr_path) if probe is not None else ""
    leaf = next(iter(flatten_exceptions(error)), error)
    return ServerStartError(f"{server_name}: {reason}: {leaf!r} {tail}".strip(), reason=reason)


def flatten_exceptions(error: BaseException) -> Iterator[BaseException]:
    """The leaves of nested exception groups, depth first."""
    if isinstance(error, BaseExceptionGroup):
        for inner in error.exceptions:
            yield from flatten_exceptions(inner)
    else:
        yield error


def read_tail(path: Path) -> str:
    """The last characters of a server's stderr log ("" when there is none)."""
    try:
        return path.read_text(errors="replace")[-STDERR_TAIL_CHARS:]
    except OSError:
        return ""
