"""What a checkpoint's vacuum costs in memory as a table grows the way a run writes it (issue 14).

    .venv/bin/python bench/bench_vacuum.py [--rows 100000] [--row-groups 16384 8192 4096]
        [--width 2000] [--per-close 1500]

A run's held connection closes (and so checkpoints) every HOLD_MAX_S (toucan/store.py), each
time with ~1,500 new trajectories at 75/s. A checkpoint writes a table's new rows as a row
group of their own, so the table becomes a run of partly filled row groups, and DuckDB's
vacuum merges neighbours that fit in fewer (at most into 3 row groups a task, its
MAX_MERGE_COUNT): so a checkpoint now and then re-reads and re-writes up to three full row
groups of a table. This writes `--rows` trajectory-shaped rows (a key, one JSON text of
`--width` bytes that compresses like a conversation; tests/bulk_store.py
`append_trajectories`) into the store's own schema in appends of 64, closing after every
`--per-close`, and samples DuckDB's jemalloc every 10 ms. Printed per row-group size: the
highest allocation during a close, when it came (rows in the table), the highest between
closes, and the file's size, the write time and a full scan's time at the end.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from memory_sampler import jemalloc_mb  # noqa: E402
from text_table import print_header, print_row  # noqa: E402

from tests.bulk_store import append_trajectories  # noqa: E402
from toucan import store as store_module  # noqa: E402
from toucan.records import Trajectory  # noqa: E402
from toucan.store import Store  # noqa: E402

BATCH = 64  # trajectories a batch writes at once (bench_scale's 64 in flight)
COLUMNS = [
    ("row group", ">9d"),
    ("rows", ">8d"),
    ("closes", ">6d"),
    ("close peak MB", ">13.0f"),
    ("at rows", ">8d"),
    ("between MB", ">10.0f"),
    ("file MB", ">7.1f"),
    ("write s", ">7.1f"),
    ("scan ms", ">7.0f"),
]


class PeakWatch:
    """DuckDB's allocation (jemalloc, MB) sampled every 10 ms; the highest inside and outside
    the marked spans (the closes)."""

    def __init__(self) -> None:
        self.in_close = False
        self.close_peak = self.between_peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            allocated = jemalloc_mb()["je_allocated"]
            if self.in_close:
                self.close_peak = max(self.close_peak, allocated)
            else:
                self.between_peak = max(self.between_peak, allocated)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def measure(row_group: int, rows: int, width: int, per_close: int) -> list[object]:
    store_module.ROW_GROUP_ROWS = row_group  # read by each attach
    with tempfile.TemporaryDirectory() as folder:
        store = Store(Path(folder) / "vacuum.duckdb")
        store.count(Trajectory)  # creates the schema
        store.execute("CHECKPOINT")
        watch = PeakWatch()
        peak_at, closes, written = 0, 0, 0
        started = time.perf_counter()
        while written < rows:
            with store.holding():
                for _ in range(max(1, per_close // BATCH)):
                    if written >= rows:
                        break
                    append_trajectories(store, written, BATCH, width)
                    written += BATCH
                before = watch.close_peak
                watch.in_close = True
            watch.in_close = False  # the block's end closed the held connection
            closes += 1
            if watch.close_peak > before:
                peak_at = written
        wall = time.perf_counter() - started
        watch.stop()
        scan = time.perf_counter()
        store.query("SELECT count(*), sum(length(messages::VARCHAR)) FROM trajectories")
        scan_ms = (time.perf_counter() - scan) * 1000
        size = (Path(folder) / "vacuum.duckdb").stat().st_size / 2**20
    return [
        row_group,
        written,
        closes,
        watch.close_peak,
        peak_at,
        watch.between_peak,
        size,
        wall,
        scan_ms,
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--row-groups", type=int, nargs="+", default=[16_384, 8_192, 4_096])
    parser.add_argument("--width", type=int, default=2_000)
    parser.add_argument("--per-close", type=int, default=1_500)
    args = parser.parse_args()
    print(f"{args.rows} rows of ~{args.width} B, a close every {args.per_close}")
    print_header(COLUMNS)
    for row_group in args.row_groups:
        print_row(COLUMNS, measure(row_group, args.rows, args.width, args.per_close))


if __name__ == "__main__":
    main()
