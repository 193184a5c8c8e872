"""Throughput of the model layer against the fake model server, next to the ideal.

    .venv/bin/python bench/bench_llm.py [--levels 16 64 256] [--repeats 3] [--latency 1.0]

The fake server runs in its own process (own GIL) with a fixed latency. For each level C of
items in flight it measures, in the same run: a bare aiohttp client, a bare httpx client (each
under a Semaphore(C)), and our `complete_structured` over an LlmRouter (LiteLLM Router inside,
events and parsing included). ideal = min(C / latency, faster bare client), as defined in
shared/research/benchmarks.md; items/min are medians over the repeats.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp
import httpx
from pydantic import BaseModel
from text_table import print_header, print_row

from tests.fake_llm import models_config_for, run_fake_llm_process
from toucan.llm.parsing import response_format_for
from toucan.llm.replies import CallMeta
from toucan.llm.router import LlmRouter
from toucan.llm.structured import complete_structured

# C = items in flight; C/lat its ceiling; the rest in requests (or items) per second
RATE = ">8.1f"
COLUMNS = [("C", ">5"), ("C/lat", ">7.1f"), ("aiohttp", RATE), ("httpx", RATE), ("ideal", RATE)]
COLUMNS += [("toucan", RATE), ("ratio", ">6.2f")]


class BenchAnswer(BaseModel):
    question: str
    target_tools: list[str]
    difficulty: int


def request_body(index: int) -> dict:
    return {
        "model": "bench",
        "messages": [{"role": "user", "content": f"write task {index}"}],
        "response_format": response_format_for(BenchAnswer),
    }


async def run_items(count: int, in_flight: int, call: Callable[[int], Awaitable[None]]) -> float:
    """Wall seconds to push `count` items through `call` with `in_flight` at a time."""
    gate = asyncio.Semaphore(in_flight)

    async def one(index: int) -> None:
        async with gate:
            await call(index)

    started = time.perf_counter()
    await asyncio.gather(*(one(index) for index in range(count)))
    return time.perf_counter() - started


async def measure_aiohttp(base_url: str, count: int, in_flight: int) -> float:
    connector = aiohttp.TCPConnector(limit=in_flight)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def call(index: int) -> None:
            async with session.post(f"{base_url}/chat/completions", json=request_body(index)) as r:
                BenchAnswer.model_validate_json(
                    (await r.json())["choices"][0]["message"]["content"]
                )

        return await run_items(count, in_flight, call)


async def measure_httpx(base_url: str, count: int, in_flight: int) -> float:
    limits = httpx.Limits(max_connections=in_flight, max_keepalive_connections=in_flight)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:

        async def call(index: int) -> None:
            response = await client.post(f"{base_url}/chat/completions", json=request_body(index))
            BenchAnswer.model_validate_json(response.json()["choices"][0]["message"]["content"])

        return await run_items(count, in_flight, call)


def build_router(base_url: str, in_flight: int) -> LlmRouter:
    models = models_config_for(
        base_url,
        generators=("bench",),
        teachers=("bench",),
        judge=("bench",),
        max_concurrency=in_flight,
        timeout_s=60,
    )
    return LlmRouter(models)


async def measure_router(router: LlmRouter, count: int, in_flight: int) -> float:
    async def call(index: int) -> None:
        meta = CallMeta(run_id="bench", stage="bench", item_id=f"item_{index}")
        messages = [{"role": "user", "content": f"write task {index}"}]
        await complete_structured(
            router, "bench", messages, BenchAnswer, meta=meta, use_cache=False
        )

    elapsed = await run_items(count, in_flight, call)
    assert len(router.drain_events()) == count
    return elapsed


async def bench_level(base_url: str, in_flight: int, count: int, repeats: int) -> dict[str, float]:
    router = build_router(base_url, in_flight)
    await measure_router(router, min(count, 2 * in_flight), in_flight)  # warm-up: lazy imports
    rates: dict[str, list[float]] = {"aiohttp": [], "httpx": [], "toucan": []}
    for _ in range(repeats):
        rates["aiohttp"].append(count / await measure_aiohttp(base_url, count, in_flight))
        rates["httpx"].append(count / await measure_httpx(base_url, count, in_flight))
        rates["toucan"].append(count / await measure_router(router, count, in_flight))
    return {name: statistics.median(values) for name, values in rates.items()}


async def time_to_first_reply(base_url: str) -> float:
    started = time.perf_counter()
    router = build_router(base_url, 16)
    messages = [{"role": "user", "content": "first"}]
    await complete_structured(router, "bench", messages, BenchAnswer, use_cache=False)
    return time.perf_counter() - started


def parse_level_arguments(doc: str, repeats: int) -> argparse.Namespace:
    """The command line of a sweep over levels C of items in flight against the fake server."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--levels", type=int, nargs="+", default=[16, 64, 256])
    parser.add_argument("--repeats", type=int, default=repeats)
    parser.add_argument("--latency", type=float, default=1.0)
    parser.add_argument("--factor", type=int, default=8, help="items per level = factor * C")
    return parser.parse_args()


async def main(levels: list[int], repeats: int, latency: float, factor: int) -> None:
    with run_fake_llm_process(latency=latency) as base_url:
        first = await time_to_first_reply(base_url)
        print(
            f"fake server latency {latency:.2f} s; first reply (router build + first call, "
            f"includes the {latency:.1f} s latency) {first:.2f} s"
        )
        print_header(COLUMNS, "   (requests or items per second)")
        for in_flight in levels:
            count = max(128, factor * in_flight)
            rates = await bench_level(base_url, in_flight, count, repeats)
            ideal = min(in_flight / latency, max(rates["aiohttp"], rates["httpx"]))
            values = [in_flight, in_flight / latency, rates["aiohttp"], rates["httpx"], ideal]
            values += [rates["toucan"], rates["toucan"] / ideal]
            print_row(COLUMNS, values, f"   toucan items/min {rates['toucan'] * 60:,.0f}")


if __name__ == "__main__":
    arguments = parse_level_arguments(__doc__, repeats=3)
    asyncio.run(main(arguments.levels, arguments.repeats, arguments.latency, arguments.factor))
