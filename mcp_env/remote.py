"""Reaching servers over streamable HTTP or SSE, starting the local `launch` process first.

The launch process runs in its own sandbox like a stdio server; we wait until its port
accepts connections before the MCP handshake. The transport is negotiated: a spec's own
transport (streamable HTTP for a bare URL) is tried first, and the other one when the server
answers the first with a status that means "not this transport" (see `connect_remote`).
"""

from __future__ import annotations

import contextlib
import socket
import time
from pathlib import Path
from typing import Any

import anyio
import httpx2
from mcp import Client
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import McpHttpClientFactory, create_mcp_http_client

from mcp_env.handshake import connect_client, read_tail
from mcp_env.sandbox import Launch, prepare_launch, remove_sandbox, start_process, stop_process_tree
from mcp_env.specs import HttpSpec, SseSpec
from toucan.errors import ServerStartError

# MCP spec 2025-06-18, basic/transports, "Backwards Compatibility": a client POSTs
# initialize; a 4xx such as 405 Method Not Allowed or 404 Not Found means an old HTTP+SSE
# server, to be reached by a GET that opens the event stream. The same statuses on an SSE GET
# mean a streamable HTTP server (400: it wants a session id; 405: no GET stream). 406 and 415
# are a server refusing the other transport's content types.
FALLBACK_STATUSES = frozenset({400, 404, 405, 406, 415})
AUTH_STATUSES = frozenset({401, 403})
OTHER_TRANSPORT = {"streamable-http": "sse", "sse": "streamable-http"}


class FirstStatus:
    """The HTTP status of the first response an attempt got (the initialize POST or the SSE
    GET); the SDK reports a refused POST without its status."""

    def __init__(self) -> None:
        self.status: int | None = None

    async def record(self, response: httpx2.Response) -> None:
        if self.status is None:
            self.status = response.status_code

    def client_factory(self) -> McpHttpClientFactory:
        """The SDK's client factory, with this recorder hooked to every response."""

        def make_client(
            headers: dict[str, str] | None = None,
            timeout: httpx2.Timeout | None = None,
            auth: httpx2.Auth | None = None,
        ) -> httpx2.AsyncClient:
            client = create_mcp_http_client(headers=headers, timeout=timeout, auth=auth)
            client.event_hooks["response"].append(self.record)
            return client

        return make_client


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


async def connect_remote(
    spec: HttpSpec | SseSpec,
    url: str,
    stack: contextlib.AsyncExitStack,
    connect_timeout: float,
    probe: Any,
    client_options: dict[str, Any] | None = None,
) -> tuple[Client, str]:
    """A connected client and the transport it speaks. The spec's transport first; on a
    status in FALLBACK_STATUSES (reason `wrong_transport`), the other one. Raises
    ServerStartError naming the real cause: connection_refused (nothing listening),
    auth_failed (401/403), http_error (another status), no_mcp_endpoint (neither transport
    answers at this URL), initialize_timeout, connect_failed. `client_options` (the
    session's callbacks) go to `mcp.Client` as they are."""
    options = client_options or {}
    first = spec.transport
    try:
        return await _attempt(spec, url, first, stack, connect_timeout, probe, options), first
    except ServerStartError as error:
        if error.reason != "wrong_transport":
            raise
        first_error = error
    second = OTHER_TRANSPORT[first]
    try:
        return await _attempt(spec, url, second, stack, connect_timeout, probe, options), second
    except ServerStartError as error:
        reason = "no_mcp_endpoint" if error.reason == "wrong_transport" else error.reason
        raise ServerStartError(f"{first_error}; then {error}", reason=reason) from error


async def _attempt(
    spec: HttpSpec | SseSpec,
    url: str,
    transport: str,
    stack: contextlib.AsyncExitStack,
    connect_timeout: float,
    probe: Any,
    client_options: dict[str, Any],
) -> Client:
    """One handshake on one transport; its resources join `stack` only if it succeeds."""
    first_status = FirstStatus()
    async with contextlib.AsyncExitStack() as attempt:
        client = await make_http_client(
            spec,
            url,
            attempt,
            connect_timeout,
            transport=transport,
            first_status=first_status,
            **client_options,
        )
        try:
            await connect_client(client, attempt, probe, connect_timeout, spec.name)
        except ServerStartError as error:
            reason = http_failure_reason(error.reason, first_status.status)
            status = "" if first_status.status is None else f" (HTTP {first_status.status})"
            shown = f"{transport} at {url}{status}: {error}"
            raise ServerStartError(shown, reason=reason) from error
        stack.push_async_exit(attempt.pop_all())
    return client


def http_failure_reason(reason: str, status: int | None) -> str:
    """The reason a failed handshake is reported under, given the first HTTP status seen."""
    if status in FALLBACK_STATUSES:
        return "wrong_transport"
    if status in AUTH_STATUSES:
        return "auth_failed"
    if status is not None and status >= 400:
        return "http_error"
    return reason


def transport_notes(spec: HttpSpec | SseSpec | Any, transport_used: str) -> list[str]:
    """`wrong_transport` when the server speaks another transport than the one its spec
    declares; a bare URL declares none, so whatever answers is right."""
    declared = getattr(spec, "transport_declared", False)
    return ["wrong_transport"] if declared and transport_used != spec.transport else []


async def make_http_client(
    spec: HttpSpec | SseSpec,
    url: str,
    stack: contextlib.AsyncExitStack,
    connect_timeout: float,
    *,
    transport: str | None = None,
    first_status: FirstStatus | None = None,
    **client_options: Any,
) -> Client:
    """A not yet connected client for `url` on `transport` (default: the spec's);
    `client_options` (the session's callbacks) go to `mcp.Client` as they are."""
    values = {field: value for field, value in spec.config_values.items() if value}
    url = fill_config(url, values)
    headers = {key: fill_config(value, values) for key, value in spec.headers.items()}
    factory = (first_status or FirstStatus()).client_factory()
    if (transport or spec.transport) == "sse":
        transport = sse_client(
            url, headers=headers, timeout=connect_timeout, httpx_client_factory=factory
        )
    else:
        http_client = await stack.enter_async_context(factory(headers=headers))
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
