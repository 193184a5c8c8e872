"""Reaching servers over streamable HTTP or SSE, starting the local `launch` process first.

The launch process runs in its own sandbox like a stdio server; we wait until its port
accepts connections before the MCP handshake.
"""

from __future__ import annotations

import contextlib
import socket
import time
from pathlib import Path
from typing import Any

import anyio
from mcp import Client
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from mcp_env.sandbox import Launch, prepare_launch, remove_sandbox, start_process, stop_process_tree
from mcp_env.specs import HttpSpec, SseSpec
from toucan.errors import ServerStartError

STDERR_TAIL_CHARS = 2000


def remove_sandbox_log(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()


class LaunchedProcess:
    """The local process behind an HTTP/SSE spec's `launch` (stopped by the exit stack)."""

    def __init__(self, launch: Launch, stderr_path: Path) -> None:
        self.launch = launch
        self.stderr_path = stderr_path
        self.process: Any = None


async def start_launch(
    spec: HttpSpec | SseSpec,
    stack: contextlib.AsyncExitStack,
    sandbox_options: dict[str, Any],
    connect_timeout: float,
) -> tuple[LaunchedProcess | None, str]:
    """Start `spec.launch` if any and wait until its port accepts connections."""
    if spec.launch is None:
        return None, spec.url
    launch = prepare_launch(spec.launch, **sandbox_options)
    stack.callback(remove_sandbox, launch.sandbox_dir)
    launched = LaunchedProcess(launch, Path(launch.sandbox_dir + ".stderr.log"))
    stack.callback(remove_sandbox_log, launched.stderr_path)
    with open(launched.stderr_path, "ab") as stdout_log:
        launched.process = await start_process(
            launch, stdout=stdout_log.fileno(), stderr_path=launched.stderr_path
        )
    stack.push_async_callback(stop_process_tree, launched.process)
    url = spec.url.replace("{port}", str(launch.port))
    await wait_for_port(launched, launch.port, connect_timeout, spec.name)
    return launched, url


async def wait_for_port(
    launched: LaunchedProcess, port: int, timeout: float, server_name: str
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if launched.process.returncode is not None:
            raise ServerStartError(
                f"{server_name} exited with {launched.process.returncode}: "
                f"{read_tail(launched.stderr_path)}",
                reason="crashed_at_start",
            )
        if await anyio.to_thread.run_sync(port_accepts, port):
            return
        await anyio.sleep(0.05)
    raise ServerStartError(f"{server_name} did not open port {port}", reason="port_timeout")


def port_accepts(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


async def make_http_client(
    spec: HttpSpec | SseSpec,
    url: str,
    stack: contextlib.AsyncExitStack,
    connect_timeout: float,
    **client_options: Any,
) -> Client:
    """A legacy-mode client over the spec's transport; `client_options` (the session's
    callbacks) go to `mcp.Client` as they are."""
    values = {field: value for field, value in spec.config_values.items() if value}
    url = fill_config(url, values)
    headers = {key: fill_config(value, values) for key, value in spec.headers.items()}
    if isinstance(spec, SseSpec):
        transport = sse_client(url, headers=headers, timeout=connect_timeout)
    else:
        http_client = await stack.enter_async_context(create_mcp_http_client(headers=headers))
        transport = streamable_http_client(url, http_client=http_client)
    return Client(
        transport,
        mode="legacy",
        cache=None,
        read_timeout_seconds=connect_timeout,
        **client_options,
    )


def fill_config(text: str, values: dict[str, str]) -> str:
    """`{smithery_api_key}`-style placeholders in a URL or header, from the config values."""
    for name, value in values.items():
        text = text.replace("{" + name + "}", value)
    return text


def read_tail(path: Path) -> str:
    try:
        return path.read_text(errors="replace")[-STDERR_TAIL_CHARS:]
    except OSError:
        return ""
