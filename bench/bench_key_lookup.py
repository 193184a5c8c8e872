"""What a per-batch lookup of rows by id costs in a large store: `among` against `list_contains`.

    .venv/bin/python bench/bench_key_lookup.py [--tasks 1000000] [--ids 1000] [--lookups 10]

Fills a fresh store with `--tasks` tasks (tests/bulk_store.py), checkpointed. Then, for each
way of writing "task_id is one of these ids", a fresh process holds the store as a writing
run does and reads (task_id, strategy, generator) of `--ids` random task ids, `--lookups`
times (the lookup filter-tasks' write hook makes per batch). It prints the first lookup's
time, the median of the others (the ids are picked apart, so no scan of this process
loads the table before), and DuckDB's ART_INDEX and BASE_TABLE memory
(`duckdb_memory()`) and the RSS after them. Filling the store is not timed (~1 min at 1M).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_key_index import rss_mb  # noqa: E402
from text_table import print_header, print_row  # noqa: E402

from tests.bulk_store import fill_tasks  # noqa: E402
from toucan.records import Task  # noqa: E402
from toucan.store import Store, among  # noqa: E402

FORMS = {
    "among": among("task_id"),
    "list_contains": "list_contains(?, task_id)",
    "in_list": "task_id IN ({marks})",
}
COLUMNS = [
    ("condition", "<14"),
    ("first ms", ">9.1f"),
    ("median ms", ">10.1f"),
    ("ART_INDEX MB", ">13.0f"),
    ("BASE_TABLE MB", ">14.0f"),
    ("RSS MB", ">7.0f"),
]


def memory_mb(store: Store, tag: str) -> float:
    rows = store.query(
        "SELECT coalesce(sum(memory_usage_bytes), 0) FROM duckdb_memory() WHERE tag = ?", [tag]
    )
    return rows[0][0] / 2**20


def child(path: str, form: str, ids: int, lookups: int) -> None:
    store = Store(path)
    where = FORMS[form].format(marks=", ".join("?" * ids))
    sql = f"SELECT task_id, strategy, generator FROM tasks WHERE {where}"
    every = json.loads(Path(path).with_suffix(".ids.json").read_text())
    rng = random.Random(7)
    with store.holding():
        times = []
        for _ in range(lookups):
            chosen = rng.sample(every, ids)
            started = time.perf_counter()
            rows = store.query(sql, chosen if form == "in_list" else [chosen])
            times.append((time.perf_counter() - started) * 1000)
            assert len(rows) == ids, (form, len(rows))
        art, base = memory_mb(store, "ART_INDEX"), memory_mb(store, "BASE_TABLE")
        print_row(COLUMNS, [form, times[0], statistics.median(times[1:]), art, base, rss_mb()])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1_000_000)
    parser.add_argument("--ids", type=int, default=1_000)
    parser.add_argument("--lookups", type=int, default=10)
    parser.add_argument("--child", nargs=2, metavar=("STORE", "FORM"))
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.child[1], args.ids, args.lookups)
        return
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "bench.duckdb"
        store = Store(path)
        store.ensure_schema()
        fill_tasks(store, args.tasks, ["srv_a", "srv_b"])
        store.execute("CHECKPOINT")
        every = [row[0] for row in store.query("SELECT task_id FROM tasks")]
        path.with_suffix(".ids.json").write_text(json.dumps(every))
        del every
        size = path.stat().st_size / 2**20
        print(f"store: {store.count(Task):,} tasks, {size:.0f} MB; {args.ids:,} ids a lookup")
        print_header(COLUMNS)
        for form in FORMS:
            command = [sys.executable, __file__, "--child", str(path), form]
            command += ["--ids", str(args.ids), "--lookups", str(args.lookups)]
            subprocess.run(command, check=True)


if __name__ == "__main__":
    main()
