"""A stdio transport over a process we start ourselves (exact env, known pid, tree shutdown).

The SDK's `stdio_client` merges a default environment into the child's and hides the
process; we need an allow-listed environment, bwrap wrapping, the pid for crash detection
and a session-wide kill. Lines on stdout that are not JSON-RPC (banners, prints) are
dropped here instead of being logged as parse failures.

A dropped line that still names one of our requests (a reply that is JSON-RPC in shape but
not in content: a non-object result, no result nor error, a cut-off line) is that request's
answer: it becomes a JSON-RPC error with code JUNK_REPLY_CODE, so the call fails at once as
`junk_reply` instead of waiting out its timeout. Every dropped line is counted
(`noise_lines`), so a call that times out after the server wrote junk can say so.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import mcp_types
from anyio.abc import Process
from anyio.streams.text import TextReceiveStream
from mcp.shared.message import SessionMessage

from mcp_env.sandbox import Launch, start_process, stop_process_tree

logger = logging.getLogger(__name__)

# JSON-RPC's implementation-defined server error range is -32000..-32099; the SDK uses
# -32000..-32002 and -32042, servers seldom go deep: this code marks a reply we synthesized
JUNK_REPLY_CODE = -32097
JUNK_EXCERPT_CHARS = 200
# the id of a reply line that did not parse (cut off, or not JSON at all)
REPLY_ID = re.compile(r'^\s*\{\s*(?:"jsonrpc"\s*:\s*"[^"]*"\s*,\s*)?"id"\s*:\s*(-?\d+)\b')


def junk_reply_id(line: str) -> int | str | None:
    """The request id a junk stdout line answers, or None: a JSON object with an `id` and no
    `method` (a reply, not a request of the server's), or a line that breaks off after
    starting as a reply does: `{"jsonrpc": "2.0", "id": 7, ...` or `{"id": 7, ...`."""
    try:
        value = json.loads(line)
    except ValueError:
        match = REPLY_ID.match(line)
        return int(match.group(1)) if match else None
    if not isinstance(value, dict) or "method" in value:
        return None
    reply_id = value.get("id")
    if isinstance(reply_id, bool) or not isinstance(reply_id, int | str):
        return None
    return reply_id


def junk_reply_error(reply_id: int | str, line: str) -> mcp_types.JSONRPCError:
    """The error that stands for a junk reply to request `reply_id`."""
    excerpt = line.strip()[:JUNK_EXCERPT_CHARS]
    return mcp_types.JSONRPCError(
        jsonrpc="2.0",
        id=reply_id,
        error=mcp_types.ErrorData(code=JUNK_REPLY_CODE, message=f"junk reply: {excerpt}"),
    )


class ProcessTransport:
    """Async context manager yielding (read_stream, write_stream) for mcp.Client."""

    def __init__(self, launch: Launch, stderr_path: Path) -> None:
        self.launch = launch
        self.stderr_path = stderr_path
        self.process: Process | None = None
        self.noise_lines = 0
        # the server exited or closed its stdout before we began to stop it
        self.exited_before_stop = False
        self._stdout_closed = False
        self._stack: contextlib.AsyncExitStack | None = None

    async def __aenter__(self):
        stack = contextlib.AsyncExitStack()
        try:
            streams = await stack.enter_async_context(self._run())
        except BaseException:
            await stack.aclose()
            raise
        self._stack = stack
        return streams

    async def __aexit__(self, *exc_info: object) -> bool | None:
        assert self._stack is not None
        return await self._stack.__aexit__(*exc_info)

    @contextlib.asynccontextmanager
    async def _run(self) -> AsyncIterator[tuple]:
        self.process = process = await start_process(
            self.launch, stdout=-1, stderr_path=self.stderr_path
        )
        reader_send, read_stream = anyio.create_memory_object_stream[SessionMessage | Exception](0)
        write_stream, writer_receive = anyio.create_memory_object_stream[SessionMessage](0)
        try:
            async with anyio.create_task_group() as task_group:
                task_group.start_soon(self._pump_stdout, process, reader_send)
                task_group.start_soon(self._pump_stdin, process, writer_receive, reader_send)
                try:
                    yield read_stream, write_stream
                finally:
                    self.exited_before_stop = self._stdout_closed or process.returncode is not None
                    await stop_process_tree(process)
                    task_group.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                for stream in (read_stream, write_stream, reader_send, writer_receive):
                    await stream.aclose()

    async def _pump_stdout(self, process: Process, reader_send) -> None:
        assert process.stdout is not None
        pending: list[str] = []
        async with reader_send:
            try:
                async for chunk in TextReceiveStream(process.stdout, errors="replace"):
                    *complete, rest = chunk.split("\n")
                    for piece in complete:
                        pending.append(piece)
                        line = "".join(pending)
                        pending = []
                        await self._forward_line(line, reader_send)
                    if rest:
                        pending.append(rest)
                self._stdout_closed = True
            except (anyio.ClosedResourceError, anyio.BrokenResourceError, OSError):
                return

    async def _forward_line(self, line: str, reader_send) -> None:
        if not line.strip():
            return
        try:
            message = mcp_types.jsonrpc_message_adapter.validate_json(line, by_name=False)
        except ValueError:
            self.noise_lines += 1
            reply_id = junk_reply_id(line)
            if reply_id is None:
                logger.debug("dropped a non-JSON-RPC stdout line: %.200s", line)
                return
            message = junk_reply_error(reply_id, line)
        await reader_send.send(SessionMessage(message))

    async def _pump_stdin(self, process: Process, writer_receive, reader_send) -> None:
        assert process.stdin is not None
        try:
            async with writer_receive:
                async for session_message in writer_receive:
                    payload = session_message.message.model_dump_json(
                        by_alias=True, exclude_unset=True
                    )
                    await process.stdin.send((payload + "\n").encode())
        except (anyio.ClosedResourceError, anyio.BrokenResourceError, OSError):
            await reader_send.aclose()
