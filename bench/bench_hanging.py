"""A trajectories run with two broken servers (one hangs, one answers junk) next to the same
run without them: the ratio of wall times (issue 15, fault 6: target < 1.5, ideal 1).

Ten stdio servers (tests/servers): eight healthy tiny servers whose tool takes `--tool-s`,
one rawserver whose tool never answers and one whose tool writes junk instead of a reply
(tests/servers/quirks/broken_answers.json). Every server gets `--items` kept tasks; each
trajectory is one tool call and a final answer, the fake model server answering after
`--latency` seconds. The broken servers cost what it takes to find them out: about one call
timeout (`--call-timeout`) of one of the run's parallel batch lanes each (flows/trajectories.py MAX_PARALLEL_BATCHES); the ratio depends
on how that compares with the healthy run (the issue's: 60 s against 81 s). Run:

    .venv/bin/python bench/bench_hanging.py
    .venv/bin/python bench/bench_hanging.py --call-timeout 30 --items 48
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

HEALTHY = 8
BROKEN = {"hangs": "stall", "junk": "junk_text"}  # server name -> its broken tool


def answer_script(request: dict[str, Any]) -> Any:
    """One tool call (the question names the server and tool), then the final answer."""
    from tests.fake_llm import Rule
    from tests.trajectories.helpers import first_user_text

    if any(m.get("role") == "assistant" for m in request["messages"]):
        return Rule(text="Here is the answer.")
    tool, arguments = json.loads(first_user_text(request).split("CALL ", 1)[1])
    return Rule(tool_calls=[(tool, arguments)])


def seed(store_path: Path, items: int, tool_s: float, broken: bool) -> Any:
    from tests.mcp_env.conftest import quirk_spec
    from tests.trajectories.helpers import kept_task, seed_store, server_row, tiny_spec
    from toucan.store import Store

    calls: list[tuple[Any, str, dict[str, Any]]] = []
    for n in range(HEALTHY):
        spec = tiny_spec(store_path.parent / f"healthy-{n}.log", name=f"healthy-{n}")
        calls.append((server_row(spec), "slow", {"seconds": tool_s}))
    if broken:
        for name, tool in BROKEN.items():
            calls.append((server_row(quirk_spec("broken_answers", name=name)), tool, {}))
    tasks = [
        kept_task(f"q{n} CALL {json.dumps([tool, arguments])}", [server], [(server, tool)])
        for server, tool, arguments in calls
        for n in range(items)
    ]
    store = Store(store_path)
    seed_store(store, [server for server, _, _ in calls], tasks)
    return store


async def run_once(base_url: str, options: argparse.Namespace, broken: bool) -> dict[str, Any]:
    from flows.runner import run_stage_async
    from tests.trajectories.helpers import fake_settings
    from toucan.records import Trajectory

    with tempfile.TemporaryDirectory() as tmp:
        store = seed(Path(tmp) / "bench.duckdb", options.items, options.tool_s, broken)
        settings = fake_settings(
            base_url,
            store.path,
            trajectories={"concurrency": options.in_flight, "wall_clock_s": 600},
            mcp={
                "call_timeout_s": options.call_timeout,
                "call_timeout_max_s": options.call_timeout,
            },
        )
        started = time.perf_counter()
        summary = await run_stage_async("trajectories", settings, store)
        elapsed = time.perf_counter() - started
        rows = store.select(Trajectory)
    waited = Counter(
        entry.error_reason
        for row in rows
        for entry in row.tool_call_log
        if entry.error_reason in ("tool_timeout", "junk_reply")
    )
    return {
        "servers": HEALTHY + (len(BROKEN) if broken else 0),
        "elapsed_s": round(elapsed, 2),
        "done": summary.total.done,
        "failed": summary.total.failed,
        "calls_that_waited_a_timeout": dict(waited),
        "paused": {name: why["reason"] for name, why in summary.paused_servers.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=32, help="kept tasks per server")
    parser.add_argument("--in-flight", type=int, default=32, help="trajectories.concurrency")
    parser.add_argument("--latency", type=float, default=0.5, help="model reply, seconds")
    parser.add_argument("--tool-s", type=float, default=0.5, help="healthy tool call, seconds")
    parser.add_argument("--call-timeout", type=float, default=15.0, help="mcp.call_timeout_s")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each, alternating")
    options = parser.parse_args()
    from tests.fake_llm import FakeLlm

    runs: dict[bool, list[dict[str, Any]]] = {False: [], True: []}
    # in this process: both runs pay its share of the CPU alike, and only their ratio counts
    with FakeLlm(default=answer_script, latency=options.latency) as server:
        base_url = server.base_url
        warm_up = argparse.Namespace(**{**vars(options), "items": 1})
        asyncio.run(run_once(base_url, warm_up, broken=False))  # imports, disk cache
        for n in range(options.repeats * 2):
            broken = n % 2 == 1
            runs[broken].append(asyncio.run(run_once(base_url, options, broken)))
            print(json.dumps(runs[broken][-1]), flush=True)
    healthy = statistics.median(run["elapsed_s"] for run in runs[False])
    with_broken = statistics.median(run["elapsed_s"] for run in runs[True])
    summary = {
        "call_timeout_s": options.call_timeout,
        "healthy_s": healthy,
        "with_broken_s": with_broken,
        "ratio": round(with_broken / healthy, 3),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
