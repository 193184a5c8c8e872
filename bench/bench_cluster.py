"""What one more Dask worker process buys on a client-CPU-bound stage, and whether the single
writer keeps up.

    .venv/bin/python bench/bench_cluster.py [--items 1024] [--repeats 3]

Stage 3 (filter-tasks) runs as its Prefect flow over `--items` seeded tasks against the fake
model server in its own process with zero latency, so an item's cost is our CPU (prompt
rendering, LiteLLM, parsing, checks) and the fake server's. The stage splits its items into
batches and runs two at once (tasks/llm_batch.py PARALLEL_BATCHES); each run is timed on a
fresh copy of the same store, on three task runners:

- threads: the default runner, both batches in the flow process (one GIL);
- dask-1: a LocalCluster of one worker process with one thread (the batches take turns);
- dask-2: two worker processes with one thread each (the batches run side by side).

The clusters are started before timing (the operator's cluster runs already), and a warm-up
run of two batches on each loads the imports into every worker (a cold worker spends 10-20 s
importing LiteLLM and building its first router on this machine). Items/s are medians over the repeats.

Writer: the flow run is the store's only writer. The rows the last dask-2 run wrote (ratings,
cache entries, events) are written again into a fresh copy of the seeded store through the
same path (`write_output` inside `stage_run`, one call per batch of the run), timed: the rows/s
it sustains, against the rows/s the workers produced in the run (rows / the run's wall time).
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import prefect_bench_env  # noqa: F401  (first: env, paths, logging)

# isort: split

from bench_prefect_overhead import KEY_ENV, warm_up, write_config
from bench_synthesize import seed_catalog, seed_tasks

from flows.registry import filter_tasks_flow
from flows.run_context import stage_run
from flows.task_runners import make_task_runner
from flows.writes import write_output
from tasks.llm_batch import BATCH_ITEMS, BatchOutput, split_batches
from tests.fake_llm import run_fake_llm_process
from toucan.config import load_settings
from toucan.records import Event, LlmCacheEntry, Run, TaskRating
from toucan.store import Store

IN_FLIGHT = 64  # items in flight across the batches running at once
WARM_UP_ITEMS = BATCH_ITEMS + 16  # two batches: one for each worker of dask-2
QUIET = {"dashboard_address": ":0", "silence_logs": logging.WARNING}


def seeded_store(folder: Path, items: int) -> Path:
    store = Store(folder / "seeded.duckdb")
    seed_tasks(store, seed_catalog(store), items)
    return store.path


def fresh_copy(seeded: Path, name: str) -> Path:
    target = seeded.with_name(f"{name}.duckdb")
    shutil.copyfile(seeded, target)
    return target


def time_run(flow_call: Callable[..., Any], store: Path, config: Path, items: int) -> float:
    started = time.perf_counter()
    summary = flow_call(store=str(store), config=str(config), profile="cloud", limit=items)
    elapsed = time.perf_counter() - started
    assert summary.rated == items and summary.errors == 0, summary
    return elapsed


def runs_on(runner: Any) -> Callable[..., Any]:
    return filter_tasks_flow.with_options(task_runner=runner)


def run_rows(store: Store) -> tuple[list[BatchOutput], int]:
    """The last filter-tasks run's output, regrouped into as many batches as the run had
    (ratings as the run split them, cache entries and events shared out evenly), and its row
    count."""
    run_id = store.select(Run, "stage = 'filter_tasks' ORDER BY started_at DESC LIMIT 1")[0].run_id
    ratings = store.select(TaskRating, "run_id = ? ORDER BY task_id", [run_id])
    entries = store.select(LlmCacheEntry, "run_id = ?", [run_id])
    events = store.select(Event, "run_id = ?", [run_id])
    batches, _ = split_batches(ratings, IN_FLIGHT)
    outputs = [
        BatchOutput(
            records=batch,
            cache_entries=entries[n :: len(batches)],
            events=events[n :: len(batches)],
        )
        for n, batch in enumerate(batches)
    ]
    return outputs, len(ratings) + len(entries) + len(events)


def time_writer(seeded: Path, config: Path, source: Path) -> tuple[int, float]:
    """(rows, seconds) writing the run's output again, batch by batch, as the flow writes it."""
    outputs, rows = run_rows(Store(source))
    target = Store(fresh_copy(seeded, "writer"))
    settings = load_settings(config, profile="cloud")
    with stage_run(target, settings, "filter_tasks") as ctx:
        started = time.perf_counter()
        for output in outputs:
            write_output(ctx, output)
        elapsed = time.perf_counter() - started
    return rows, elapsed


def load_imports() -> None:
    """Run on every worker before timing: the stage's modules and LiteLLM, which a cold worker
    would otherwise import inside the first timed batch it gets."""
    import importlib

    for module in ("tasks.filter_tasks", "flows.registry", "litellm"):
        importlib.import_module(module)


def main(items: int, repeats: int) -> None:
    from distributed import Client, LocalCluster

    assert items >= WARM_UP_ITEMS, f"--items must be at least {WARM_UP_ITEMS}"
    os.environ[KEY_ENV] = "sk-bench"
    cores, load = os.cpu_count(), os.getloadavg()[0]
    with (
        tempfile.TemporaryDirectory() as tmp,
        run_fake_llm_process(latency=0.0) as url,
        LocalCluster(n_workers=1, threads_per_worker=1, processes=True, **QUIET) as one,
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True, **QUIET) as two,
    ):
        folder = Path(tmp)
        config = write_config(folder / "bench.yaml", url, IN_FLIGHT)
        config.write_text(config.read_text() + f"filter_tasks: {{concurrency: {IN_FLIGHT}}}\n")
        seeded = seeded_store(folder, items)
        warm_up()
        logging.getLogger("distributed").setLevel(logging.WARNING)  # Prefect's config set INFO
        runners = {
            "threads": runs_on(make_task_runner("default")),
            "dask-1": runs_on(make_task_runner("dask", address=one.scheduler_address)),
            "dask-2": runs_on(make_task_runner("dask", address=two.scheduler_address)),
        }
        for cluster in (one, two):
            with Client(cluster.scheduler_address) as client:
                client.run(load_imports)
        for name, call in runners.items():  # LiteLLM's lazy imports, on every worker
            time_run(call, fresh_copy(seeded, f"warm-{name}"), config, WARM_UP_ITEMS)
        walls: dict[str, list[float]] = {name: [] for name in runners}
        for repeat in range(repeats):
            for name, call in runners.items():
                store = fresh_copy(seeded, f"{name}-{repeat}")
                walls[name].append(time_run(call, store, config, items))
                print(f"run {repeat} {name}: {walls[name][-1]:.2f} s", flush=True)
        last_dask_2 = seeded.with_name(f"dask-2-{repeats - 1}.duckdb")
        rows, write_s = time_writer(seeded, config, last_dask_2)
    rates = {name: items / statistics.median(values) for name, values in walls.items()}
    print(
        f"filter-tasks, {items} items, {IN_FLIGHT} in flight, fake latency 0 s, "
        f"{cores} cores (load {load:.2f} at start)"
    )
    for name, rate in rates.items():
        print(f"{name:>8}: {rate:7.1f} items/s  (median wall {items / rate:.2f} s)")
    print(f"ratio dask-2 / dask-1: {rates['dask-2'] / rates['dask-1']:.2f}")
    print(f"ratio dask-2 / threads: {rates['dask-2'] / rates['threads']:.2f}")
    produced = rows / statistics.median(walls["dask-2"])
    sustained = rows / write_s
    print(
        f"writer: {rows} rows of the last dask-2 run written again in {write_s:.2f} s = "
        f"{sustained:.0f} rows/s; the workers produced {produced:.0f} rows/s; "
        f"headroom {sustained / produced:.1f}x"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=3)
    arguments = parser.parse_args()
    main(arguments.items, arguments.repeats)
