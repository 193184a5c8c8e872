"""check_server: verdicts for good, broken and probe-less servers; never raises."""

from __future__ import annotations

import anyio
import pytest

from mcp_env.health import check_server
from mcp_env.pool import SessionPool
from mcp_env.session import open_session
from tests.mcp_env.conftest import CONNECT_TIMEOUT_S, tiny_spec

pytestmark = pytest.mark.anyio


async def test_verdicts_for_each_kind_of_server():
    specs = {
        "probe": tiny_spec("probe", probe={"tool": "add", "arguments": {"a": 1, "b": 1}}),
        "read_only": tiny_spec("read-only", read_only_tools=["picture"]),
        "schemas": tiny_spec("schemas"),
        "failing_probe": tiny_spec("failing-probe", probe={"tool": "boom", "arguments": {}}),
        "crash": tiny_spec("crash", mode="crash"),
        "malformed": tiny_spec("malformed", mode="malformed"),
    }
    checks = {}

    async def check(key: str, pool: SessionPool) -> None:
        checks[key] = await check_server(specs[key], pool)

    async with (
        SessionPool(connect_timeout=CONNECT_TIMEOUT_S) as pool,
        anyio.create_task_group() as task_group,
    ):
        for key in specs:
            task_group.start_soon(check, key, pool)
    assert (checks["probe"].status, checks["probe"].probe_result) == ("ok", "2")
    assert checks["probe"].connect_latency_ms > 0 and len(checks["probe"].tools) >= 8
    assert (checks["read_only"].status, checks["read_only"].probe_tool) == ("ok", "picture")
    assert (checks["schemas"].status, checks["schemas"].reason) == ("ok", "schemas_only")
    assert checks["schemas"].schemas_checked == len(checks["schemas"].tools)
    assert (checks["failing_probe"].status, checks["failing_probe"].reason) == (
        "rejected",
        "probe_failed",
    )
    assert (checks["crash"].status, checks["crash"].reason) == ("rejected", "crashed_at_start")
    # its only tool has no name: rejected alone, which leaves the server nothing to offer
    assert checks["malformed"].reason == "no_usable_tools"
    assert [t.reason for t in checks["malformed"].rejected_tools] == ["missing_name"]


async def test_check_works_on_an_open_session():
    spec = tiny_spec("direct", probe={"tool": "echo", "arguments": {"text": "alive"}})
    async with open_session(spec, connect_timeout=CONNECT_TIMEOUT_S) as session:
        verdict = await check_server(spec, session)
    assert (verdict.status, verdict.probe_result, verdict.connect_latency_ms) == (
        "ok",
        "alive",
        None,
    )
