"""Throughput of stage 2 (synthesize) and stage 3 (filter-tasks) against the fake model server.

    .venv/bin/python bench/bench_synthesize.py [--levels 16 64 256] [--repeats 1] [--factor 8]

The fake server runs in its own process with a fixed latency (1 s). For each level C of items
in flight, in the same run: a bare aiohttp and a bare httpx client (each under a Semaphore(C),
from bench_llm.py) give the ideal = min(C / latency, faster bare client), as defined in
shared/research/benchmarks.md; then the whole stage (plan or selection, prompt rendering, the
model layer, parsing, checks, DuckDB writes, events, dedup) runs over factor x C items on a
fresh store, timed from the call to its return. Items/min are medians over the repeats.
The stages run on plain asyncio (`run_stage_async`): the same runner the Prefect flows use,
with the asyncio executor instead of Prefect tasks.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_llm import measure_aiohttp, measure_httpx, parse_level_arguments  # noqa: E402
from text_table import print_header, print_row  # noqa: E402

from flows.runner import run_stage_async  # noqa: E402
from tests.fake_llm import run_fake_llm_process  # noqa: E402
from toucan.config import load_settings  # noqa: E402
from toucan.ids import make_id, schema_hash  # noqa: E402
from toucan.records import Server, TargetTool, Task, Tool  # noqa: E402
from toucan.store import Store  # noqa: E402

# the five generator deployments of the shipped config (the paper's names)
GENERATORS = [d.name for d in load_settings(profile="cloud").models.generators]
DOMAINS = ["Weather", "Finance", "Education", "Gaming"]
SERVERS = 24
TOOLS_PER_SERVER = 4

# C = items in flight; C/lat its ceiling; rates in items per minute, ratios = stage / ideal
PER_MIN = ">8.0f"
COLUMNS = [("C", ">5"), ("items", ">6"), ("C/lat", PER_MIN), ("aiohttp", PER_MIN)]
COLUMNS += [("httpx", PER_MIN), ("ideal", PER_MIN), ("synth", PER_MIN), ("ratio", ">6.2f")]
COLUMNS += [("judge", PER_MIN), ("ratio", ">6.2f")]


def seed_catalog(store: Store) -> list[tuple[Server, list[Tool]]]:
    catalog = []
    for index in range(SERVERS):
        server = Server(
            server_id=make_id("server", "bench", index),
            name=f"Bench Server {index}",
            source="fleet",
            transport="stdio",
            status="ok",
            domain=DOMAINS[index % len(DOMAINS)],
            description="A server for the benchmark.",
            tool_count=TOOLS_PER_SERVER,
            featured=index < 8,
            usage_count=index,
        )
        tools = []
        for number in range(TOOLS_PER_SERVER):
            input_schema = {"type": "object", "properties": {"q": {"type": "string"}}}
            digest = schema_hash(input_schema)
            tools.append(
                Tool(
                    tool_id=make_id("tool", server.server_id, f"tool_{number}", digest),
                    server_id=server.server_id,
                    name=f"tool_{number}",
                    description=f"Tool number {number}.",
                    input_schema=input_schema,
                    schema_hash=digest,
                )
            )
        catalog.append((server, tools))
        store.insert([server, *tools])
    return catalog


def seed_tasks(store: Store, catalog: list[tuple[Server, list[Tool]]], count: int) -> None:
    """`count` ok tasks for the judge to rate (unique questions, real targets)."""
    rows = []
    for index in range(count):
        server, tools = catalog[index % len(catalog)]
        rows.append(
            Task(
                task_id=make_id("task", "bench", index),
                strategy="single_server",
                question=f"Benchmark question number {index}: what does tool 0 say about {index}?",
                target_tools=[
                    TargetTool(server_id=server.server_id, server=server.name, tool=tools[0].name)
                ],
                server_ids=[server.server_id],
                generator=GENERATORS[index % len(GENERATORS)],
            )
        )
    store.insert(rows)


def bench_settings(base_url: str, in_flight: int, **sections: dict):
    """Every model group on the fake server at `base_url`, `in_flight` items at once in the
    LLM stages; `sections` are further settings sections (e.g. `mcp={...}`)."""

    def deployment(name: str) -> dict:
        return {
            "name": name,
            "model": f"openai/{name}",
            "api_base": base_url,
            "api_key_env": "BENCH_FAKE_KEY",
            "timeout_s": 60,
            "max_concurrency": in_flight,
        }

    os.environ["BENCH_FAKE_KEY"] = "sk-bench"
    return load_settings(
        profile="cloud",
        overrides={
            "max_in_flight": in_flight,
            "models": {
                "generators": [deployment(n) for n in GENERATORS],
                "teachers": [deployment("teacher")],
                "judge": [deployment("judge")],
            },
            "synthesize": {"concurrency": in_flight},
            "filter_tasks": {"concurrency": in_flight},
            **sections,
        },
    )


async def time_synthesize(base_url: str, in_flight: int, count: int) -> float:
    with tempfile.TemporaryDirectory() as folder:
        store = Store(Path(folder) / "bench.duckdb")
        seed_catalog(store)
        settings = bench_settings(base_url, in_flight)
        seed = int(time.time())
        started = time.perf_counter()
        summary = await run_stage_async("synthesize", settings, store, limit=count, seed=seed)
        elapsed = time.perf_counter() - started
    assert summary.attempted == count, summary
    return elapsed


async def time_filter(base_url: str, in_flight: int, count: int) -> float:
    with tempfile.TemporaryDirectory() as folder:
        store = Store(Path(folder) / "bench.duckdb")
        seed_tasks(store, seed_catalog(store), count)
        settings = bench_settings(base_url, in_flight)
        started = time.perf_counter()
        summary = await run_stage_async("filter_tasks", settings, store)
        elapsed = time.perf_counter() - started
    assert summary.rated == count, summary
    return elapsed


async def bench_level(base_url: str, in_flight: int, count: int, repeats: int) -> dict[str, float]:
    rates: dict[str, list[float]] = {"aiohttp": [], "httpx": [], "synthesize": [], "filter": []}
    for _ in range(repeats):
        rates["aiohttp"].append(count / await measure_aiohttp(base_url, count, in_flight))
        rates["httpx"].append(count / await measure_httpx(base_url, count, in_flight))
        rates["synthesize"].append(count / await time_synthesize(base_url, in_flight, count))
        rates["filter"].append(count / await time_filter(base_url, in_flight, count))
    return {name: statistics.median(values) for name, values in rates.items()}


async def main(levels: list[int], repeats: int, latency: float, factor: int) -> None:
    with run_fake_llm_process(latency=latency) as base_url:
        await time_synthesize(base_url, 16, 16)  # warm-up: lazy imports inside LiteLLM
        print(f"fake server latency {latency:.2f} s; items/min (ratio = stage / ideal)")
        print_header(COLUMNS)
        for in_flight in levels:
            count = factor * in_flight
            rates = await bench_level(base_url, in_flight, count, repeats)
            ideal = min(in_flight / latency, max(rates["aiohttp"], rates["httpx"]))
            per_min = [in_flight / latency, rates["aiohttp"], rates["httpx"], ideal]
            values = [in_flight, count] + [rate * 60 for rate in per_min]
            for stage in ("synthesize", "filter"):
                values += [rates[stage] * 60, rates[stage] / ideal]
            print_row(COLUMNS, values)


if __name__ == "__main__":
    arguments = parse_level_arguments(__doc__, repeats=1)
    asyncio.run(main(arguments.levels, arguments.repeats, arguments.latency, arguments.factor))
