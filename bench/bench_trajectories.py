"""Trajectories per minute against the fake model server, next to the ideal.

Each trajectory is 3 model turns (1 s each at the fake server) with 2 real tool calls on the
fleet's `time-mcp` server (npm) in between. The ideal (research/benchmarks.md) is the lower of
in-flight / (3 x latency) and what a bare aiohttp client gets from the same server with the
same concurrency doing 3 sequential requests per "trajectory". Run:

    .venv/bin/python bench/bench_trajectories.py                 # 32 and 128 in flight
    .venv/bin/python bench/bench_trajectories.py --in-flight 32 --style langchain
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TURNS = 3
LATENCY_S = 1.0
SERVER = "time-mcp"
DATES = ["2024-02-01", "2025-02-01"]


def scripted_turns(request: dict[str, Any]) -> Any:
    """The fake server's default: turn n asks for a month's length, the last turn answers."""
    from tests.fake_llm import Rule

    turn = sum(1 for m in request["messages"] if m.get("role") == "assistant")
    if turn < TURNS - 1:
        return Rule(tool_calls=[("days_in_month", {"date": DATES[turn]})])
    return Rule(text="February had 29 days in 2024 and 28 in 2025.")


def serve(latency: float) -> None:
    """Child process: the fake server with the 3-turn script (own GIL, like a real provider)."""
    import signal
    import threading

    from tests.fake_llm import FakeLlm

    server = FakeLlm(default=scripted_turns, latency=latency).start()
    print(server.base_url, flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()
    server.stop()


@contextlib.contextmanager
def fake_server(latency: float) -> Iterator[str]:
    process = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(latency)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert process.stdout is not None
        base_url = process.stdout.readline().strip()
        if not base_url.startswith("http"):
            raise RuntimeError("fake server did not start")
        yield base_url
    finally:
        process.terminate()
        process.wait(timeout=15)


async def bare_client_rate(base_url: str, in_flight: int, trajectories: int) -> float:
    """Trajectories/min of a bare aiohttp client: 3 sequential requests per trajectory."""
    import aiohttp

    body = {"model": "Teacher-A", "messages": [{"role": "user", "content": "hi"}]}
    gate = asyncio.Semaphore(in_flight)
    connector = aiohttp.TCPConnector(limit=in_flight)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one() -> None:
            async with gate:
                messages = list(body["messages"])
                for _ in range(TURNS):
                    async with session.post(
                        f"{base_url}/chat/completions", json={**body, "messages": messages}
                    ) as response:
                        reply = await response.json()
                    messages.append(reply["choices"][0]["message"])

        started = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(trajectories)))
        return trajectories / (time.perf_counter() - started) * 60


def seed(store_path: Path, count: int) -> Any:
    from mcp_env.fleet.catalog import load_fleet_catalog
    from mcp_env.specs import parse_server_spec
    from tests.trajectories.helpers import fleet_dir, kept_task, seed_store, server_row
    from toucan.store import Store

    spec = next(
        parse_server_spec(s) for s in load_fleet_catalog(fleet_dir()) if s["name"] == SERVER
    )
    server = server_row(spec)
    store = Store(store_path)
    seed_store(
        store,
        [server],
        [
            kept_task(f"month lengths, set {n}", [server], [(server, "days_in_month")])
            for n in range(count)
        ],
    )
    return store


async def pipeline_rate(
    base_url: str, in_flight: int, trajectories: int, style: str
) -> tuple[float, dict[str, Any]]:
    from flows.runner import run_stage_async
    from tests.trajectories.helpers import fake_settings

    with tempfile.TemporaryDirectory() as tmp:
        store = seed(Path(tmp) / "bench.duckdb", trajectories)
        settings = fake_settings(
            base_url,
            store.path,
            trajectories={
                "concurrency": in_flight,
                "styles": [style],
                "max_turns": 10,
                "wall_clock_s": 300,
            },
            mcp={"per_server_concurrency": 16},
        )
        started = time.perf_counter()
        summary = await run_stage_async("trajectories", settings, store)
        elapsed = time.perf_counter() - started
        first, last = store.query("SELECT min(started_at), max(finished_at) FROM trajectories")[0]
    span = (last - first).total_seconds()  # the agent phase, without server start-up
    if summary.stop_reasons != {"final_answer": trajectories}:
        raise RuntimeError(f"not every trajectory answered: {summary.stop_reasons}")
    return trajectories / elapsed * 60, {
        "elapsed_s": round(elapsed, 2),
        "agent_phase_s": round(span, 2),
        "agent_phase_per_min": round(trajectories / span * 60, 1),
        "tool_calls": summary.total.tool_calls,
        "stop_reasons": summary.stop_reasons,
    }


def measure(in_flight: int, trajectories: int, style: str, repeats: int) -> dict[str, Any]:
    with fake_server(LATENCY_S) as base_url:
        pipeline, details, bare = [], {}, []
        for _ in range(repeats):
            rate, details = asyncio.run(pipeline_rate(base_url, in_flight, trajectories, style))
            pipeline.append(rate)
            bare.append(asyncio.run(bare_client_rate(base_url, in_flight, trajectories)))
    theory = in_flight / (TURNS * LATENCY_S) * 60
    ideal = min(theory, statistics.median(bare))
    rate = statistics.median(pipeline)
    return {
        "style": style,
        "in_flight": in_flight,
        "trajectories": trajectories,
        "theory_per_min": round(theory, 1),
        "bare_aiohttp_per_min": round(statistics.median(bare), 1),
        "ideal_per_min": round(ideal, 1),
        "pipeline_per_min": round(rate, 1),
        "ratio_to_ideal": round(rate / ideal, 3),
        "runs": [round(r, 1) for r in pipeline],
        **details,
        "agent_phase_ratio": round(details["agent_phase_per_min"] / ideal, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", type=float, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--in-flight", type=int, action="append")
    parser.add_argument("--waves", type=int, default=4, help="trajectories = waves x in flight")
    parser.add_argument(
        "--style",
        default="function-calling",
        help="function-calling or langchain (the script speaks native tools)",
    )
    parser.add_argument("--repeats", type=int, default=1)
    arguments = parser.parse_args()
    if arguments.serve is not None:
        serve(arguments.serve)
        return
    for in_flight in arguments.in_flight or [32, 128]:
        result = measure(in_flight, in_flight * arguments.waves, arguments.style, arguments.repeats)
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
