"""What a stage's writes load of the store's primary-key indexes (issue 14's growth at 1M).

    .venv/bin/python bench/bench_key_index.py [--tasks 1000000] [--writes 40] [--per-write 64]

Fills a fresh store with what a filter-tasks run over `--tasks` items ends with
(tests/bulk_store.py: that many tasks and ratings, twice that many stored replies with
`make_cache_key`-shaped keys), checkpointed. Then a fresh process holds the store as a
writing run does and inserts `--per-write` new replies (content-hash keys, as
toucan/llm/cache.py makes them) per write, `--writes` times; after each write it prints the
replies inserted so far, DuckDB's `ART_INDEX` memory (`duckdb_memory()`) and the process's RSS.
Filling the store is not timed (~2 min at 1M).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from text_table import print_header, print_row  # noqa: E402

from tests.bulk_store import fill_llm_cache, fill_task_ratings, fill_tasks  # noqa: E402
from toucan.ids import make_id  # noqa: E402
from toucan.records import LlmCacheEntry  # noqa: E402
from toucan.store import Store  # noqa: E402

COLUMNS = [("replies inserted", ">16"), ("ART_INDEX MB", ">12.0f"), ("RSS MB", ">7.0f")]


def fill(path: Path, tasks: int) -> None:
    store = Store(path)
    store.ensure_schema()
    fill_tasks(store, tasks, ["srv_a", "srv_b"])
    fill_task_ratings(store)
    fill_llm_cache(store, tasks, tag="synthesize")
    fill_llm_cache(store, tasks, tag="judge")
    store.execute("CHECKPOINT")


def rss_mb() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * 4096 / 2**20


def art_mb(store: Store) -> float:
    with store.connect() as con:
        row = con.execute(
            "SELECT coalesce(sum(memory_usage_bytes), 0) FROM duckdb_memory() "
            "WHERE tag = 'ART_INDEX'"
        ).fetchone()
    return (row[0] if row else 0) / 2**20


def child(path: str, writes: int, per_write: int) -> None:
    store = Store(path)
    print_header(COLUMNS)
    with store.holding():
        store.count(LlmCacheEntry)
        print_row(COLUMNS, [0, art_mb(store), rss_mb()])
        for write in range(writes):
            store.insert(
                [
                    LlmCacheEntry(
                        cache_key=make_id("llm", "bench", write, i),
                        model="bench",
                        prompt_hash="p",
                        params_hash="q",
                    )
                    for i in range(per_write)
                ]
            )
            print_row(COLUMNS, [(write + 1) * per_write, art_mb(store), rss_mb()])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1_000_000)
    parser.add_argument("--writes", type=int, default=40)
    parser.add_argument("--per-write", type=int, default=64)
    parser.add_argument("--child", metavar="STORE")
    args = parser.parse_args()
    if args.child:
        child(args.child, args.writes, args.per_write)
        return
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "bench.duckdb"
        fill(path, args.tasks)
        size = path.stat().st_size / 2**20
        print(f"store: {args.tasks:,} tasks and ratings, {2 * args.tasks:,} replies, {size:.0f} MB")
        command = [sys.executable, __file__, "--child", str(path)]
        command += ["--writes", str(args.writes), "--per-write", str(args.per_write)]
        subprocess.run(command, check=True)


if __name__ == "__main__":
    main()
