"""Pooled tool call vs a fresh connection per call: median latency of each, and the ratio.

    .venv/bin/python bench/bench_pool.py [--server fleet|tiny] [--calls 200]

Uses the fleet's mcp-server-time when it is installed under .fleet/venvs, else the tiny test
server. The fresh-connection side spawns, handshakes, calls and shuts down every time.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import anyio

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mcp_env.pool import SessionPool  # noqa: E402
from mcp_env.session import open_session  # noqa: E402
from mcp_env.specs import StdioSpec  # noqa: E402

FLEET_TIME = ROOT / ".fleet" / "venvs" / "mcp-server-time" / "bin" / "mcp-server-time"
TINY_SERVER = ROOT / "tests" / "servers" / "tiny_server.py"
CONNECT_TIMEOUT_S = 120.0


def pick_server(choice: str) -> tuple[StdioSpec, str, dict]:
    if choice in ("auto", "fleet") and FLEET_TIME.exists():
        spec = StdioSpec(name="mcp-server-time", command=str(FLEET_TIME),
                         args=["--local-timezone", "UTC"])  # fmt: skip
        return spec, "get_current_time", {"timezone": "UTC"}
    if choice == "fleet":
        raise SystemExit(f"{FLEET_TIME} is not installed")
    spec = StdioSpec(name="tiny", command=sys.executable, args=[str(TINY_SERVER)])
    return spec, "echo", {"text": "ping"}


async def time_pooled(spec: StdioSpec, tool: str, arguments: dict, calls: int) -> list[float]:
    latencies = []
    async with SessionPool(connect_timeout=CONNECT_TIMEOUT_S) as pool:
        server_id = pool.register(spec)
        await pool.call_tool(server_id, tool, arguments)  # warm-up: the connect is not timed
        for _ in range(calls):
            started = time.perf_counter()
            await pool.call_tool(server_id, tool, arguments)
            latencies.append((time.perf_counter() - started) * 1000)
    return latencies


async def time_fresh(spec: StdioSpec, tool: str, arguments: dict, calls: int) -> list[float]:
    latencies = []
    for _ in range(calls):
        started = time.perf_counter()
        async with open_session(spec, connect_timeout=CONNECT_TIMEOUT_S) as session:
            await session.call_tool(tool, arguments)
        latencies.append((time.perf_counter() - started) * 1000)
    return latencies


async def run(choice: str, calls: int, fresh_calls: int) -> None:
    spec, tool, arguments = pick_server(choice)
    pooled = statistics.median(await time_pooled(spec, tool, arguments, calls))
    fresh = statistics.median(await time_fresh(spec, tool, arguments, fresh_calls))
    print(f"server: {spec.name} (tool {tool}; {calls} pooled, {fresh_calls} fresh calls)")
    print(f"pooled call median:          {pooled:9.2f} ms")
    print(f"fresh connection per call:   {fresh:9.2f} ms")
    print(f"ratio fresh / pooled:        {fresh / pooled:9.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", choices=["auto", "fleet", "tiny"], default="auto")
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--fresh-calls", type=int, default=None, help="default: --calls")
    options = parser.parse_args()
    anyio.run(run, options.server, options.calls, options.fresh_calls or options.calls)


if __name__ == "__main__":
    main()
