"""open_session against tiny real servers: stdio, streamable HTTP, SSE, and failures."""

from __future__ import annotations

import anyio
import pytest

from mcp_env.session import open_session
from mcp_env.specs import HttpSpec, SseSpec, StdioSpec
from tests.mcp_env.conftest import (
    CONNECT_TIMEOUT_S,
    PYTHON,
    RUN_TAG,
    TINY_SERVER,
    list_tiny_processes,
    read_log,
    tiny_spec,
)
from toucan.errors import ServerCrashed, ServerStartError, ToolTimeout

pytestmark = pytest.mark.anyio


async def test_lists_tools_and_returns_errors_as_results(tmp_path):
    log = tmp_path / "calls.log"
    async with open_session(tiny_spec(log=log), connect_timeout=CONNECT_TIMEOUT_S) as session:
        tools = {tool.name: tool for tool in await session.list_tools()}
        assert {"echo", "add", "boom", "big", "die", "picture"} <= set(tools)
        assert tools["add"].input_schema["required"] == ["a", "b"]
        added = await session.call_tool("add", {"a": 2, "b": 3})
        failed = await session.call_tool("boom", {})
        picture = await session.call_tool("picture", {})
        unknown = await session.call_tool("no_such_tool", {})
    assert (added.text, added.is_error, added.content_types) == ("5", False, ["text"])
    assert failed.is_error and failed.error_reason == "tool_error"
    assert picture.text.startswith("[image: image/png") and picture.content_types == ["image"]
    assert unknown.is_error
    assert [event for _, event in read_log(log)] == ["start good", "add", "boom", "picture"]


async def test_schema_hash_is_stable_across_sessions():
    hashes = []
    for _ in range(2):
        async with open_session(tiny_spec(), connect_timeout=CONNECT_TIMEOUT_S) as session:
            hashes.append({tool.name: tool.schema_hash for tool in await session.list_tools()})
    assert hashes[0] == hashes[1]
    assert len(set(hashes[0].values())) > 1  # different schemas hash differently


async def test_server_crashing_at_start_is_a_start_error():
    with pytest.raises(ServerStartError) as caught:
        async with open_session(tiny_spec(mode="crash"), connect_timeout=CONNECT_TIMEOUT_S):
            pass
    assert caught.value.reason == "crashed_at_start"
    assert "refusing to start" in str(caught.value)


async def test_server_hanging_on_initialize_times_out():
    with pytest.raises(ServerStartError) as caught:
        async with open_session(tiny_spec(mode="hang"), connect_timeout=1.5):
            pass
    assert caught.value.reason == "initialize_timeout"


async def test_missing_command_is_reported():
    spec = StdioSpec(name="ghost", command="/nonexistent/bin/ghost-mcp")
    with pytest.raises(ServerStartError) as caught:
        async with open_session(spec):
            pass
    assert caught.value.reason == "command_not_found"


async def test_a_listed_tool_without_a_name_is_rejected_alone():
    async with open_session(tiny_spec(mode="malformed"), connect_timeout=CONNECT_TIMEOUT_S) as s:
        listing = await s.read_tool_listing()
    assert listing.tools == []
    assert [(t.name, t.reason) for t in listing.rejected] == [("#1", "missing_name")]


async def test_non_json_stdout_lines_are_skipped():
    async with open_session(tiny_spec(mode="noisy"), connect_timeout=CONNECT_TIMEOUT_S) as session:
        result = await session.call_tool("echo", {"text": "hi"})
    assert result.text == "hi"


async def test_call_timeout_keeps_the_session_usable():
    async with open_session(tiny_spec(), connect_timeout=CONNECT_TIMEOUT_S) as session:
        with pytest.raises(ToolTimeout):
            await session.call_tool("slow", {"seconds": 30}, timeout=0.5)
        assert (await session.call_tool("echo", {"text": "still here"})).text == "still here"


async def test_server_dying_mid_session_raises_server_crashed():
    async with open_session(tiny_spec(), connect_timeout=CONNECT_TIMEOUT_S) as session:
        with pytest.raises(ServerCrashed):
            await session.call_tool("die", {})
        assert not session.is_alive()


async def test_cancelled_caller_leaves_no_process():
    with anyio.move_on_after(30) as scope:
        async with open_session(tiny_spec(), connect_timeout=CONNECT_TIMEOUT_S) as session:
            assert list_tiny_processes()
            scope.cancel()
            await session.call_tool("slow", {"seconds": 30})
    assert scope.cancelled_caught
    assert not list_tiny_processes()  # shutdown ran to the end under cancellation


def launched_spec(spec_type, transport: str, path: str):
    launch = StdioSpec(
        name="launcher",
        command=PYTHON,
        args=[str(TINY_SERVER), "--tag", RUN_TAG, "--transport", transport, "--port", "{port}"],
    )
    return spec_type(name=f"tiny-{transport}", url="http://127.0.0.1:{port}" + path, launch=launch)


@pytest.mark.parametrize(
    ("spec_type", "transport", "path"),
    [(HttpSpec, "streamable-http", "/mcp"), (SseSpec, "sse", "/sse")],
)
async def test_http_transports_end_to_end(spec_type, transport, path):
    spec = launched_spec(spec_type, transport, path)
    async with open_session(spec, connect_timeout=CONNECT_TIMEOUT_S) as session:
        names = {tool.name for tool in await session.list_tools()}
        result = await session.call_tool("add", {"a": 20, "b": 22})
        failed = await session.call_tool("boom", {})
    assert "add" in names
    assert result.text == "42" and not result.is_error
    assert failed.is_error


async def test_http_server_that_is_not_there_is_a_start_error():
    spec = HttpSpec(name="nowhere", url="http://127.0.0.1:9/mcp")
    with pytest.raises(ServerStartError) as caught:
        async with open_session(spec, connect_timeout=5):
            pass
    assert caught.value.reason in {"connection_refused", "connect_failed"}


async def test_launch_process_crashing_is_a_start_error():
    spec = launched_spec(HttpSpec, "streamable-http", "/mcp")
    spec.launch.args.extend(["--mode", "crash"])
    with pytest.raises(ServerStartError) as caught:
        async with open_session(spec, connect_timeout=CONNECT_TIMEOUT_S):
            pass
    assert caught.value.reason == "crashed_at_start"
    assert "refusing to start" in str(caught.value)
