"""The two places where toucan reaches past the MCP SDK's public API (mcp==2.3.0, pinned).

1. `request_tools_page`: `ClientSession.list_tools` validates a whole page against the typed
   protocol surface, so one tool the SDK dislikes fails the page and the server loses every
   tool. We need the raw page to judge each tool alone (mcp_env/listing.py). The SDK has no
   public raw request; its own `subscriptions.py` uses the same dispatcher seam.
2. `take_over_output_checks`: `call_tool` checks a result against the tool's `outputSchema`
   and raises RuntimeError when it does not match (the server's text answer is lost with
   it); before that, for a tool it has not seen listed, it re-lists with the strict
   validation above. Marking a tool as "no output schema" in the session's per-tool cache
   turns both off; toucan checks the result itself and keeps it (mcp_env/results.py).

If an SDK upgrade moves either seam, the listing tests in tests/mcp_env fail loudly.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from mcp import Client


async def request_tools_page(client: Client, cursor: str | None, timeout: float) -> Any:
    """One raw `tools/list` result (JSON as received), after the SDK's transport-level
    stamping (protocol-version header). Raises what the SDK raises for a request: MCPError
    (error reply, timeout, closed connection) and transport errors."""
    session = client.session
    data: dict[str, Any] = {"method": "tools/list"}
    if cursor is not None:
        data["params"] = {"cursor": cursor}
    options: dict[str, Any] = {"timeout": timeout}
    session._stamp(data, options)  # type: ignore[arg-type]
    return await session._dispatcher.send_raw_request(  # pyright: ignore[reportPrivateUsage]
        "tools/list",
        data.get("params"),
        options,  # type: ignore[arg-type]
    )


def take_over_output_checks(client: Client, tool_names: Iterable[str]) -> None:
    """Tell the SDK these tools have no output schema, so its `call_tool` neither re-lists
    nor raises on a result that misses its schema; see the module docstring."""
    known = client.session._tool_output_schemas  # pyright: ignore[reportPrivateUsage]
    for name in tool_names:
        known[name] = None
