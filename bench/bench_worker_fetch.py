"""Stored replies fetched from worker processes while the flow run holds the store and writes.

    .venv/bin/python bench/bench_worker_fetch.py [--workers 2] [--threads 4] [--gap 0.01]

A batch on a Dask worker answers a cached request by reading the reply from the store's file
(toucan/llm/cache.py `_fetch`, read-only, `Store.select`), which DuckDB lets it open only while
no process holds the file for writing. Here this process plays the flow run: it holds the store
(`Store.holding`, as `stage_run` does) and writes one row every `--gap` seconds for SECONDS,
while `--workers` spawned processes, each with a pickled `LlmCache.load` of STORED replies
and `--threads` threads, fetch stored replies back to back (the worst case: a resumed agent
run's replayed turns, each a hit). Printed: the writer's write latencies and each worker's
fetches, failures and fetch latencies (median, p99, max).
"""

from __future__ import annotations

import argparse
import multiprocessing
import pickle
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.bulk_store import fill_llm_cache
from toucan.ids import make_id
from toucan.llm.cache import CacheKey, LlmCache
from toucan.records import Event
from toucan.store import Store

STORED = 20_000  # replies in the store
SAMPLED = 500  # distinct keys the workers fetch, round robin
SECONDS = 8.0  # how long the workers fetch and the writer writes
SPAWN_S = 2.0  # a spawned worker's imports, before the writer starts


def fetch_back_to_back(
    blob: bytes, keys: list[str], threads: int, out: multiprocessing.Queue[tuple]
) -> None:
    """One worker process: `threads` threads fetching `keys` for SECONDS; puts (fetches,
    failures, median s, p99 s, max s)."""
    cache: LlmCache = pickle.loads(blob)
    latencies: list[float] = []
    failures = 0
    lock = threading.Lock()
    stop = time.monotonic() + SECONDS

    def fetch(start: int) -> None:
        nonlocal failures
        at = start
        while time.monotonic() < stop:
            key, at = keys[at % len(keys)], at + threads
            began = time.monotonic()
            try:
                found = cache.get(CacheKey((key, "", ""))) is not None
            except Exception:  # a StoreError after LOCK_WAIT_S: counted, not raised
                found = False
            with lock:
                failures += not found
                latencies.append(time.monotonic() - began)

    workers = [threading.Thread(target=fetch, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    latencies.sort()
    count = len(latencies)
    out.put((count, failures, latencies[count // 2], latencies[int(count * 0.99)], latencies[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--gap", type=float, default=0.01, help="seconds between writes")
    args = parser.parse_args()
    store = Store(Path(tempfile.mkdtemp()) / "fetch.duckdb")
    fill_llm_cache(store, STORED)
    keys = [row[0] for row in store.query(f"SELECT cache_key FROM llm_cache LIMIT {SAMPLED}")]
    spawn = multiprocessing.get_context("spawn")
    results: multiprocessing.Queue[tuple] = spawn.Queue()
    writes: list[float] = []
    with store.holding():
        blob = pickle.dumps(LlmCache.load(store, "run_bench"))
        procs = [
            spawn.Process(target=fetch_back_to_back, args=(blob, keys, args.threads, results))
            for _ in range(args.workers)
        ]
        for proc in procs:
            proc.start()
        time.sleep(SPAWN_S)
        end = time.monotonic() + SECONDS
        while time.monotonic() < end:
            began = time.monotonic()
            event = Event(event_id=make_id("evt", "bench", len(writes)), run_id="b", stage="b")
            store.insert([event])
            writes.append(time.monotonic() - began)
            time.sleep(args.gap)
        fetched = [results.get(timeout=120) for _ in procs]
        for proc in procs:
            proc.join()
    writes.sort()
    print(
        f"writer: {len(writes)} writes, median {writes[len(writes) // 2] * 1e3:.0f} ms, "
        f"max {writes[-1] * 1e3:.0f} ms"
    )
    for count, failures, median, p99, slowest in fetched:
        print(
            f"worker: {count} fetches, {failures} failed, median {median * 1e3:.0f} ms, "
            f"p99 {p99 * 1e3:.0f} ms, max {slowest * 1e3:.0f} ms"
        )


if __name__ == "__main__":
    main()
