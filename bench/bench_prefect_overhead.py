"""What Prefect costs on a real stage: stage 2 (synthesize) on the same items, once as the plain
runner on asyncio (`run_stage_async`) and once as the Prefect flow (`synthesize_flow`, batches
fanned out as Prefect tasks on the default runner).

    .venv/bin/python bench/bench_prefect_overhead.py [--items 128] [--in-flight 32]
                                                      [--latency 1.0] [--repeats 3]

The fake model server runs in its own process with a fixed latency per call, so the stage is
latency-bound as with a real provider. Each measurement uses a fresh store seeded with the same
catalog and the same seed, so both modes plan and call exactly the same items (no cache hits).
The Prefect API (ephemeral mode) is started once before timing by a trivial flow; that one-time
start-up is printed separately. Modes alternate; the medians are compared.
Target: flow / plain <= 1.10.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path

import prefect_bench_env  # noqa: F401  (first: env, paths, logging)

# isort: split

import yaml
from bench_synthesize import GENERATORS, seed_catalog
from prefect import flow

from flows.registry import synthesize_flow
from flows.runner import run_stage_async
from tests.fake_llm import run_fake_llm_process
from toucan.config import load_settings
from toucan.store import Store

KEY_ENV = "BENCH_FAKE_KEY"
SEED = 11


def write_config(path: Path, base_url: str, in_flight: int) -> Path:
    def deployment(name: str) -> dict[str, object]:
        return {
            "name": name,
            "model": f"openai/{name}",
            "api_base": base_url,
            "api_key_env": KEY_ENV,
            "timeout_s": 60,
            "max_concurrency": in_flight,
        }

    path.write_text(yaml.safe_dump({
        "profile": "cloud",
        "max_in_flight": in_flight,
        "models": {"generators": [deployment(n) for n in GENERATORS],
                   "teachers": [deployment("teacher")], "judge": [deployment("judge")]},
        "synthesize": {"concurrency": in_flight},
    }))  # fmt: skip
    return path


def fresh_store(folder: Path, name: str) -> Store:
    store = Store(folder / f"{name}.duckdb")
    seed_catalog(store)
    return store


def time_plain(folder: Path, config: Path, items: int, run: int) -> float:
    store = fresh_store(folder, f"plain-{run}")
    settings = load_settings(config, profile="cloud")
    started = time.perf_counter()
    summary = asyncio.run(run_stage_async("synthesize", settings, store, limit=items, seed=SEED))
    elapsed = time.perf_counter() - started
    assert summary.attempted == items, summary
    return elapsed


def time_flow(folder: Path, config: Path, items: int, run: int) -> float:
    store = fresh_store(folder, f"flow-{run}")
    started = time.perf_counter()
    summary = synthesize_flow(
        store=str(store.path), config=str(config), profile="cloud", limit=items, seed=SEED
    )
    elapsed = time.perf_counter() - started
    assert summary.attempted == items, summary
    return elapsed


@flow(name="bench-warm-up", persist_result=False)
def warm_up() -> None:
    """Starts the ephemeral Prefect API once, so the timings below exclude it."""


def main(items: int, in_flight: int, latency: float, repeats: int) -> None:
    os.environ[KEY_ENV] = "sk-bench"
    with tempfile.TemporaryDirectory() as tmp, run_fake_llm_process(latency=latency) as url:
        folder = Path(tmp)
        config = write_config(folder / "bench.yaml", url, in_flight)
        started = time.perf_counter()
        warm_up()
        print(f"Prefect API start-up (once per process): {time.perf_counter() - started:.1f} s")
        time_plain(folder, config, min(items, 8), -1)  # warm LiteLLM's lazy imports
        plain, flowed = [], []
        for run in range(repeats):
            plain.append(time_plain(folder, config, items, run))
            flowed.append(time_flow(folder, config, items, run))
            print(f"run {run}: plain {plain[-1]:.2f} s, flow {flowed[-1]:.2f} s", flush=True)
    ideal = items / in_flight * latency
    plain_s, flow_s = statistics.median(plain), statistics.median(flowed)
    print(f"stage synthesize, {items} items, {in_flight} in flight, fake latency {latency:.2f} s "
          f"(ideal {ideal:.1f} s)")  # fmt: skip
    print(f"plain async: {plain_s:.2f} s   Prefect flow: {flow_s:.2f} s")
    print(f"ratio flow/plain: {flow_s / plain_s:.3f} (target <= 1.10)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=128)
    parser.add_argument("--in-flight", type=int, default=32)
    parser.add_argument("--latency", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=3)
    arguments = parser.parse_args()
    main(arguments.items, arguments.in_flight, arguments.latency, arguments.repeats)
