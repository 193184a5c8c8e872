"""SessionPool: reuse, shared connect, concurrency cap, timeouts, truncation, restarts."""

from __future__ import annotations

import anyio
import pytest

from mcp_env.pool import SessionPool
from tests.mcp_env.conftest import CONNECT_TIMEOUT_S, list_tiny_processes, read_log, tiny_spec
from toucan.errors import ServerCrashed, ServerStartError, ToolTimeout

pytestmark = pytest.mark.anyio


def make_pool(**options) -> SessionPool:
    return SessionPool(connect_timeout=CONNECT_TIMEOUT_S, **options)


def count_max_overlap(events: list[str]) -> int:
    running = peak = 0
    for event in events:
        running += {"slow-start": 1, "slow-end": -1}.get(event, 0)
        peak = max(peak, running)
    return peak


async def test_concurrent_callers_share_one_process_and_one_connect(tmp_path):
    log = tmp_path / "calls.log"
    async with make_pool() as pool:
        server_id = pool.register(tiny_spec(log=log))
        listings = []

        async def list_and_call(index: int) -> None:
            listings.append(await pool.list_tools(server_id))
            result = await pool.call_tool(server_id, "echo", {"text": str(index)})
            assert result.text == str(index)

        async with anyio.create_task_group() as task_group:
            for index in range(8):
                task_group.start_soon(list_and_call, index)
        for index in range(12):
            await pool.call_tool(server_id, "add", {"a": index, "b": 1})
        assert len(list_tiny_processes()) == 1
    events = read_log(log)
    assert [event for _, event in events].count("start good") == 1
    assert len({pid for pid, _ in events}) == 1
    assert len(events) == 1 + 8 + 12
    assert all(listing is listings[0] for listing in listings)  # one shared tools/list


async def test_per_server_concurrency_limit(tmp_path):
    log = tmp_path / "calls.log"
    async with make_pool(max_concurrency=2) as pool:
        server_id = pool.register(tiny_spec(log=log))
        await pool.list_tools(server_id)  # connect first so the calls start together
        async with anyio.create_task_group() as task_group:
            for _ in range(6):
                task_group.start_soon(pool.call_tool, server_id, "slow", {"seconds": 0.3})
    assert count_max_overlap([event for _, event in read_log(log)]) == 2


async def test_timeout_truncation_and_error_results(tmp_path):
    async with make_pool(max_result_chars=20_000) as pool:
        server_id = pool.register(tiny_spec())
        with pytest.raises(ToolTimeout):
            await pool.call_tool(server_id, "slow", {"seconds": 30}, timeout=0.5)
        pid_before = pool.server_pid(server_id)
        big = await pool.call_tool(server_id, "big", {})
        failed = await pool.call_tool(server_id, "boom", {})
        assert pool.server_pid(server_id) == pid_before  # a timeout is not a crash
    assert big.truncated and big.original_chars == 5 * 1024 * 1024
    assert big.text.endswith("\n...[truncated: 5242880 chars, showing first 20000]")
    assert big.text.startswith("x" * 20_000)
    assert failed.is_error and not failed.truncated


async def test_crash_restarts_then_marks_dead(tmp_path):
    log = tmp_path / "calls.log"
    async with make_pool(max_restarts=1) as pool:
        server_id = pool.register(tiny_spec(log=log))
        with pytest.raises(ServerCrashed):
            await pool.call_tool(server_id, "die", {})
        assert (await pool.call_tool(server_id, "echo", {"text": "back"})).text == "back"
        with pytest.raises(ServerCrashed):
            await pool.call_tool(server_id, "die", {})
        with pytest.raises(ServerStartError) as caught:
            await pool.call_tool(server_id, "echo", {"text": "again"})
        assert caught.value.reason == "too_many_restarts"
        assert pool.dead_reason(server_id) == "too_many_restarts"
    starts = [pid for pid, event in read_log(log) if event == "start good"]
    assert len(starts) == 2 and starts[0] != starts[1]


async def test_start_failure_marks_server_dead_without_retrying(tmp_path):
    log = tmp_path / "calls.log"
    async with make_pool() as pool:
        server_id = pool.register(tiny_spec(mode="crash", log=log))
        for _ in range(2):
            with pytest.raises(ServerStartError) as caught:
                await pool.list_tools(server_id)
            assert caught.value.reason == "crashed_at_start"
        assert pool.dead_reason(server_id) == "crashed_at_start"
    assert [event for _, event in read_log(log)] == ["start crash"]


async def test_session_for_keeps_state_and_aclose_stops_everything(tmp_path):
    log = tmp_path / "calls.log"
    async with make_pool() as pool:
        server_ids = [pool.register(tiny_spec(name=f"tiny-{i}", log=log)) for i in range(2)]
        for server_id in server_ids:
            async with pool.session_for(server_id) as session:
                first_pid = session.pid
                await session.call_tool("echo", {"text": "one"})
            async with pool.session_for(server_id) as session:
                assert session.pid == first_pid
        assert len(list_tiny_processes()) == 2
        await pool.aclose()
        assert not list_tiny_processes()


async def test_cancelled_pool_leaves_no_process(tmp_path):
    with anyio.move_on_after(60) as scope:
        async with make_pool() as pool:
            server_id = pool.register(tiny_spec())
            await pool.list_tools(server_id)
            scope.cancel()
            await pool.call_tool(server_id, "slow", {"seconds": 60})
    assert scope.cancelled_caught
    assert not list_tiny_processes()
