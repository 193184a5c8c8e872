"""Per-item cost and peak memory of synthesize and filter-tasks as the run grows (issue 14).

    .venv/bin/python bench/bench_scale.py [--sizes 10000 100000 1000000] [--in-flight 64]
        [--stages synthesize filter_tasks]   (BENCH_SCALE_SAMPLE=1: memory timeline)

One fake model server process answers at zero latency (tests/fake_llm.py, requests not kept),
so what is measured is our own per-item cost, not the network. For each stage and size N, a
fresh store is prepared (synthesize: a catalog of SERVERS servers; filter-tasks: the catalog
plus N tasks written by tests/bulk_store.py), then the stage runs over N items in a child
process of its own (`run_stage_async`, the runner the flows use, on plain asyncio), which
reports its wall time, CPU time (user + system, its own, from getrusage) and peak RSS
(ru_maxrss). Printed per stage and size: items/s, CPU ms per item, peak RSS, store size, and
the ratios of each size to the smallest (RSS as a difference in MB).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import typing
from pathlib import Path
from threading import get_ident as threading_get_ident

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import bench_synthesize  # noqa: E402
from text_table import print_header, print_row  # noqa: E402

from flows.runner import run_stage_async  # noqa: E402
from tests.bulk_store import fill_tasks, index_tasks  # noqa: E402
from tests.fake_llm import run_fake_llm_process  # noqa: E402
from toucan.store import Store  # noqa: E402

SERVERS = 200  # catalog size: enough (server, tool) choices for a plan of 1M slots
STAGES = ("synthesize", "filter_tasks")
SPIKE_MB = 60  # the sampler notes where our code is while DuckDB has more than this allocated
# the ratios ("x ...") and the RSS difference are to the stage's smallest size
COLUMNS = [("stage", "<13"), ("items", ">8"), ("wall s", ">8.1f"), ("items/s", ">8.1f")]
COLUMNS += [("CPU ms/it", ">9.2f"), ("peak RSS", ">9"), ("store MB", ">9.1f"), ("x rate", ">7.2f")]
COLUMNS += [("x CPU/it", ">8.2f"), ("+RSS MB", ">+8.0f")]


def prepare(stage: str, folder: Path, count: int) -> Path:
    """A store ready for `stage` over `count` items; returns its path."""
    bench_synthesize.SERVERS = SERVERS
    store = Store(folder / "bench.duckdb")
    catalog = bench_synthesize.seed_catalog(store)
    if stage == "filter_tasks":
        fill_tasks(store, count, [server.server_id for server, _ in catalog])
        index_tasks(store)
    return store.path


class MemorySampler:
    """Diagnosis (BENCH_SCALE_SAMPLE=1): samples the process's RSS, glibc's heap (mallinfo2:
    bytes in use, bytes free but kept) and the held DuckDB connection's `duckdb_memory()`
    every SAMPLE_S, and prints the samples at the highest RSS and a timeline to stderr."""

    SAMPLE_S = 0.5

    def __init__(self) -> None:
        import ctypes
        import threading

        class Mallinfo2(ctypes.Structure):
            _fields_ = [
                (n, ctypes.c_size_t)
                for n in (
                    "arena",
                    "ordblks",
                    "smblks",
                    "hblks",
                    "hblkhd",
                    "usmblks",
                    "fsmblks",
                    "uordblks",
                    "fordblks",
                    "keepcost",
                )
            ]

        self._libc = ctypes.CDLL("libc.so.6")
        self._libc.mallinfo2.restype = Mallinfo2
        import _duckdb  # DuckDB allocates through its own jemalloc (duckdb_je_*)

        self._je = ctypes.CDLL(_duckdb.__file__).duckdb_je_mallctl
        self._ctypes = ctypes
        self.samples: list[dict[str, float]] = []
        self.spike_sites: collections.Counter[str] = collections.Counter()
        self.started = time.monotonic()
        self._stop = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    def _duckdb_mb(self) -> tuple[float, str]:
        from toucan import store as store_module

        for held in list(store_module._HELD.values()):
            if not held.lock.acquire(timeout=0.3):
                return -1.0, "busy"
            try:
                if held._con is None:
                    return 0.0, "closed"
                cursor = held._con.cursor()
                tags = cursor.execute(
                    "SELECT tag, memory_usage_bytes FROM duckdb_memory() "
                    "WHERE memory_usage_bytes > 2**20 ORDER BY 2 DESC"
                ).fetchall()
                limit = cursor.execute("SELECT current_setting('memory_limit')").fetchone()[0]
                cursor.close()
                top = ",".join(f"{tag}:{used / 2**20:.0f}" for tag, used in tags)
                return sum(used for _, used in tags) / 2**20, f"{limit}|{top}"
            finally:
                held.lock.release()
        return 0.0, "none"

    def _jemalloc_mb(self) -> dict[str, float]:
        ctypes = self._ctypes
        epoch, size = ctypes.c_uint64(1), ctypes.c_size_t(8)
        self._je(b"epoch", ctypes.byref(epoch), ctypes.byref(size), ctypes.byref(epoch), size)
        got = {}
        for name in ("allocated", "active", "resident", "retained"):
            value, size = ctypes.c_size_t(0), ctypes.c_size_t(8)
            self._je(f"stats.{name}".encode(), ctypes.byref(value), ctypes.byref(size), None, 0)
            got[f"je_{name}"] = value.value / 2**20
        return got

    def _note_spike_sites(self) -> None:
        """Where our code is (innermost three of our frames per thread) while DuckDB's
        allocation is above SPIKE_MB: which queries or writes make its peaks."""
        import traceback

        for thread_id, frame in sys._current_frames().items():
            if thread_id == threading_get_ident():
                continue
            ours = [
                f"{Path(f.filename).parent.name}/{Path(f.filename).name}:{f.name}:{f.lineno}"
                for f in traceback.extract_stack(frame)
                if str(ROOT) in f.filename and "/.venv/" not in f.filename
            ]
            if ours:
                self.spike_sites[" < ".join(reversed(ours[-3:]))] += 1

    def _run(self) -> None:
        while not self._stop.wait(self.SAMPLE_S):
            with open("/proc/self/status") as status:
                kib = {
                    line.split(":")[0]: int(line.split()[1])
                    for line in status
                    if line.startswith(("VmRSS", "RssAnon", "RssFile"))
                }
            rss = kib["VmRSS"]
            if os.environ.get("BENCH_SCALE_TRIM"):  # experiment: what glibc gives back
                self._libc.malloc_trim(0)
            info = self._libc.mallinfo2()
            je = self._jemalloc_mb()
            if je["je_allocated"] > SPIKE_MB:
                self._note_spike_sites()
            duck, limit = self._duckdb_mb()
            self.samples.append(
                {
                    "t": time.monotonic() - self.started,
                    "rss": rss / 1024,
                    "heap_used": (info.uordblks + info.hblkhd) / 2**20,
                    "heap_free": info.fordblks / 2**20,
                    "duckdb": duck,
                    "limit": limit,
                    "pyblocks_k": sys.getallocatedblocks() / 1000,
                    "anon": kib["RssAnon"] / 1024,
                    "file": kib["RssFile"] / 1024,
                    **je,
                }
            )

    def report(self, out: typing.TextIO) -> None:
        self._stop.set()
        if not self.samples:
            return
        top = max(self.samples, key=lambda sample: sample["rss"])
        step = max(1, len(self.samples) // 30)
        for sample in self.samples[::step]:
            print(
                " ".join(
                    f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}"
                    for k, v in sample.items()
                ),
                file=out,
            )
        print(f"at peak RSS: {top}", file=out)
        for site, seen in self.spike_sites.most_common(8):
            print(f"DuckDB over {SPIKE_MB} MB, {seen} samples: {site}", file=out)


def child(stage: str, store_path: str, count: int, base_url: str, in_flight: int) -> None:
    """Run the stage once and print {"wall_s", "cpu_s", "rss_mb", "done"} as JSON."""
    settings = bench_synthesize.bench_settings(base_url, in_flight)
    store = Store(store_path)
    kwargs = {"limit": count, "seed": 1} if stage == "synthesize" else {}
    sampler = MemorySampler() if os.environ.get("BENCH_SCALE_SAMPLE") else None
    started, cpu = time.perf_counter(), time.process_time()
    summary = asyncio.run(run_stage_async(stage, settings, store, **kwargs))
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    if sampler is not None:
        sampler.report(sys.stderr)
    done = summary.attempted if stage == "synthesize" else summary.rated
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    print(json.dumps({"wall_s": wall, "cpu_s": cpu, "rss_mb": rss_mb, "done": done}))


def measure(stage: str, count: int, base_url: str, in_flight: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as folder:
        path = prepare(stage, Path(folder), count)
        command = [sys.executable, __file__, "--child", stage, str(path), str(count), base_url]
        output = subprocess.run(
            [*command, "--in-flight", str(in_flight)],
            capture_output=True,
            text=True,
            check=True,
        )
        if os.environ.get("BENCH_SCALE_SAMPLE"):
            print(output.stderr[-6000:], file=sys.stderr)
        output = output.stdout
        result = json.loads(output.strip().splitlines()[-1])
        result["store_mb"] = path.stat().st_size / 2**20
    if result["done"] != count:
        raise RuntimeError(f"{stage} did {result['done']} of {count} items")
    return result


def main(sizes: list[int], in_flight: int, stages: list[str]) -> None:
    print(f"fake model at zero latency, {in_flight} items in flight, {SERVERS} servers")
    print_header(COLUMNS)
    with run_fake_llm_process(latency=0.0) as base_url:
        for stage in stages:
            first: dict[str, float] | None = None
            for count in sizes:
                got = measure(stage, count, base_url, in_flight)
                rate, cpu_ms = count / got["wall_s"], got["cpu_s"] * 1000 / count
                first = first or {"rate": rate, "cpu_ms": cpu_ms, "rss": got["rss_mb"]}
                rss = got["rss_mb"]
                values = [stage, count, got["wall_s"], rate, cpu_ms, f"{rss:.0f}M", got["store_mb"]]
                ratios = [rate / first["rate"], cpu_ms / first["cpu_ms"], rss - first["rss"]]
                print_row(COLUMNS, values + ratios)


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
