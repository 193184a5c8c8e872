"""Per-item cost and peak memory of each stage as the run grows (issue 14).

    .venv/bin/python bench/bench_scale.py [--sizes 10000 100000 1000000] [--in-flight 64]
        [--stages synthesize filter_tasks trajectories export]
    BENCH_SCALE_SAMPLE=1: a memory timeline (with BENCH_SCALE_CLOSES=DIR: DuckDB's checkpoint
    log of every close there, and the closes that took the most memory); BENCH_SCALE_KEEP=DIR:
    keep each run's store there

One fake model server process answers at zero latency (tests/fake_llm.py, requests not kept),
so what is measured is our own per-item cost, not the network; a teacher's request (one with
tools) is answered with one call of a stateless fleet server's tool, then a final answer
(`agent_rules`). For each stage and size N, a fresh store is prepared, filled by
tests/bulk_store.py: synthesize, a catalog of SERVERS servers; filter-tasks, the catalog plus
N tasks; trajectories, N kept tasks on FLEET_SERVERS (real stdio servers of the installed
fleet); export, N kept trajectories with their tasks and ratings (exported as parquet and
openai JSONL). Then the stage runs over N items in a child process of its own
(`run_stage_async`, the runner the flows use, on plain asyncio), which reports its wall time,
CPU time (user + system, its own; not the MCP servers') and peak RSS (VmHWM, its own:
ru_maxrss would report the parent's, which filled the store, when that is higher). Printed
per stage and size: items/s, CPU ms per item, peak RSS, store size, and the ratios of each
size to the smallest (RSS as a difference in MB); then the steady CPU ms per item, read while
the run goes (bench/cpu_timeline.py: between 10% and 90% of its model calls, so without the
start-up, the plan and the summary, which weigh on a 10k run's total and not on a 1M run's),
and below the table the same for each tenth of the run's calls.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import bench_synthesize  # noqa: E402
from cpu_timeline import CpuTimeline  # noqa: E402
from memory_sampler import MemorySampler, peak_rss_mb  # noqa: E402
from text_table import print_header, print_row  # noqa: E402

from flows.runner import run_stage_async  # noqa: E402
from mcp_env.fleet.catalog import load_fleet_catalog  # noqa: E402
from mcp_env.specs import parse_server_spec  # noqa: E402
from tests.bulk_store import fill_task_ratings, fill_tasks, index_tasks  # noqa: E402
from tests.export.seeding import fill_kept_trajectories  # noqa: E402
from tests.fake_llm import Rule, run_fake_llm_process  # noqa: E402
from tests.trajectories.helpers import fleet_dir, server_row  # noqa: E402
from tests.trajectories.test_flow import FLEET_CALLS  # noqa: E402
from toucan.store import Store  # noqa: E402

SERVERS = 200  # catalog size: enough (server, tool) choices for a plan of 1M slots
STAGES = ("synthesize", "filter_tasks", "trajectories", "export")
FLEET_SERVERS = ("calculator", "math", "mcp-server-time")  # stateless: any order of calls
EXPORT_FORMATS = ["parquet", "openai"]
# the ratios ("x ...") and the RSS difference are to the stage's smallest size
COLUMNS = [("stage", "<13"), ("items", ">8"), ("wall s", ">8.1f"), ("items/s", ">8.1f")]
COLUMNS += [("CPU ms/it", ">9.2f"), ("peak RSS", ">9"), ("store MB", ">9.1f"), ("x rate", ">7.2f")]
COLUMNS += [
    ("x CPU/it", ">8.2f"),
    ("+RSS MB", ">+8.0f"),
    ("steady ms", ">9.2f"),
    ("x steady", ">8.2f"),
]


def agent_rules() -> list[Rule]:
    """The fake model's script: a teacher's first turn calls the offered fleet tool (one of
    FLEET_CALLS), its next one answers; every other request gets the schema default."""
    calls = dict(FLEET_CALLS.values())

    def respond(request: dict) -> Rule:
        if any(m.get("role") == "assistant" for m in request["messages"]):
            return Rule(text="Here is the answer.")
        offered = [t["function"]["name"] for t in request["tools"]]
        name = next(name for name in offered if name in calls)
        return Rule(tool_calls=[(name, calls[name])])

    return [Rule(has_tools=True, respond=respond)]


def fill_teacher_tasks(store: Store, count: int) -> None:
    """`count` kept tasks on the stateless fleet servers, each targeting its FLEET_CALLS tool."""
    catalog = {s["name"]: s for s in load_fleet_catalog(fleet_dir())}
    servers = [server_row(parse_server_spec(catalog[name])) for name in FLEET_SERVERS]
    store.upsert(servers)
    tools = [FLEET_CALLS[name][0] for name in FLEET_SERVERS]
    fill_tasks(store, count, [s.server_id for s in servers], tools=tools)
    fill_task_ratings(store)


def prepare(stage: str, folder: Path, count: int) -> Path:
    """A store ready for `stage` over `count` items, checkpointed (the stage's process does
    not replay the fill from the write-ahead log); returns its path."""
    store = Store(folder / "bench.duckdb")
    if stage == "trajectories":
        fill_teacher_tasks(store, count)
    elif stage == "export":
        fill_kept_trajectories(store, count)
    else:
        bench_synthesize.SERVERS = SERVERS
        catalog = bench_synthesize.seed_catalog(store)
        if stage == "filter_tasks":
            fill_tasks(store, count, [server.server_id for server, _ in catalog])
            index_tasks(store)
    store.execute("CHECKPOINT")
    return store.path


def stage_run(stage: str, store_path: str, count: int) -> tuple[dict, Callable[[Any], int]]:
    """The stage's parameters for a run over `count` items, and how to read the items it
    did from its summary."""
    if stage == "synthesize":
        return {"limit": count, "seed": 1}, lambda summary: summary.attempted
    if stage == "trajectories":
        return {}, lambda summary: summary.total.done
    if stage == "export":
        out = str(Path(store_path).with_name("export"))
        return {"out_dir": out, "formats": EXPORT_FORMATS}, lambda summary: summary.rows
    return {}, lambda summary: summary.rated


def child(stage: str, store_path: str, count: int, base_url: str, in_flight: int) -> None:
    """Run the stage once and print {"wall_s", "cpu_s", "rss_mb", "done"} as JSON."""
    settings = bench_synthesize.bench_settings(
        base_url,
        in_flight,
        mcp={"fleet_dir": str(fleet_dir())},
        trajectories={"concurrency": in_flight},
    )
    store = Store(store_path)
    kwargs, items_done = stage_run(stage, store_path, count)
    sampler = MemorySampler() if os.environ.get("BENCH_SCALE_SAMPLE") else None
    started, cpu = time.perf_counter(), time.process_time()
    summary = asyncio.run(run_stage_async(stage, settings, store, **kwargs))
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    if sampler is not None:
        sampler.report(sys.stderr)
    done = items_done(summary)
    print(json.dumps({"wall_s": wall, "cpu_s": cpu, "rss_mb": peak_rss_mb(), "done": done}))


def measure(stage: str, count: int, base_url: str, in_flight: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as folder:
        path = prepare(stage, Path(folder), count)
        command = [sys.executable, __file__, "--child", stage, str(path), str(count), base_url]
        command += ["--in-flight", str(in_flight)]
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        timeline = CpuTimeline(process.pid, base_url, period_s=0.25)
        output, errors = process.communicate()
        timeline.stop()
        if process.returncode:
            raise subprocess.CalledProcessError(process.returncode, command, output, errors)
        if os.environ.get("BENCH_SCALE_SAMPLE"):
            print(errors[-6000:], file=sys.stderr)
        result = json.loads(output.strip().splitlines()[-1])
        calls_per_item = timeline.samples[-1].calls / count if timeline.samples else 0.0
        result["steady_ms"] = (timeline.steady() or math.nan) * calls_per_item
        result["tenths_ms"] = [(ms or math.nan) * calls_per_item for ms in timeline.tenths()]
        result["store_mb"] = path.stat().st_size / 2**20
        if keep := os.environ.get("BENCH_SCALE_KEEP"):  # the store the run wrote, to study apart
            shutil.copy(path, Path(keep) / f"{stage}-{count}.duckdb")
    if result["done"] != count:
        raise RuntimeError(f"{stage} did {result['done']} of {count} items")
    return result


def main(sizes: list[int], in_flight: int, stages: list[str]) -> None:
    print(f"fake model at zero latency, {in_flight} items in flight, {SERVERS} servers")
    print_header(COLUMNS)
    tenths: list[str] = []
    with run_fake_llm_process(latency=0.0, rules="bench.bench_scale:agent_rules") as base_url:
        for stage in stages:
            first: dict[str, float] | None = None
            for count in sizes:
                got = measure(stage, count, base_url, in_flight)
                rate, cpu_ms = count / got["wall_s"], got["cpu_s"] * 1000 / count
                first = first or {
                    "rate": rate,
                    "cpu_ms": cpu_ms,
                    "rss": got["rss_mb"],
                    "steady": got["steady_ms"],
                }
                rss = got["rss_mb"]
                values = [stage, count, got["wall_s"], rate, cpu_ms, f"{rss:.0f}M", got["store_mb"]]
                ratios = [rate / first["rate"], cpu_ms / first["cpu_ms"], rss - first["rss"]]
                steady = [got["steady_ms"], got["steady_ms"] / first["steady"]]
                print_row(COLUMNS, values + ratios + steady)
                tenths.append(
                    f"{stage} {count}: " + " ".join(f"{ms:.2f}" for ms in got["tenths_ms"])
                )
    print("\nsteady: CPU ms per item between 10% and 90% of the run's model calls (no start-up,")
    print("plan or summary); by tenth of the run's model calls (nan: a stage without calls):")
    print("\n".join(tenths))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--in-flight", type=int, default=64)
    parser.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES))
    parser.add_argument("--child", nargs=4, metavar=("STAGE", "STORE", "COUNT", "URL"))
    arguments = parser.parse_args()
    if arguments.child:
        stage, store_path, count, base_url = arguments.child
        child(stage, store_path, int(count), base_url, arguments.in_flight)
    else:
        main(arguments.sizes, arguments.in_flight, arguments.stages)
