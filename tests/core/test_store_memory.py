"""What a store close holds in memory stays bounded as a run's tables grow (issue 14).

A run's held connection closes (and checkpoints) every HOLD_MAX_S, each time leaving a table's
new rows in a row group of their own, and DuckDB's vacuum merges such neighbours into up to 3
full row groups in one checkpoint. With 16,384-row groups a merge of ~2 KB trajectories took
~280 MB (the trajectories stage's 100k peak: +500 MB); with ROW_GROUP_ROWS (4,096) it takes
~80 MB (bench/bench_vacuum.py). Here: 60k such rows written as a run writes them, in appends
of 64 with a close after every 1,536, in a fresh process; measured as the growth of its peak
RSS (VmHWM: DuckDB's jemalloc included) over the writes.
"""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest

from tests.bulk_store import append_trajectories
from toucan import store as store_module
from toucan.records import Trajectory
from toucan.store import ROW_GROUP_ROWS, Store

ROWS = 60_000  # enough for merges of 3 full 16,384-row groups
BATCH = 64
PER_CLOSE = 1_536
CHARS = 2_000
ALLOWED_MB = 160  # measured: ~100 MB at 4,096-row groups, ~330 MB at 16,384


def peak_growth_mb(path: str, row_group_rows: int) -> float:
    """Run in a fresh process: peak RSS growth (MB) while ROWS rows are written with a close
    after every PER_CLOSE, the store attached with `row_group_rows`-row groups."""
    status = Path("/proc/self/status")

    def kilobytes(field: str) -> int:
        line = next(line for line in status.read_text().splitlines() if line.startswith(field))
        return int(line.split()[1])

    store_module.ROW_GROUP_ROWS = row_group_rows
    store = Store(path)
    append_trajectories(store, 0, BATCH, CHARS)  # warm-up: DuckDB's first open and write
    written = BATCH
    before = kilobytes("VmRSS:")
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    while written < ROWS:
        with store.holding():  # its end closes the connection: a checkpoint
            for _ in range(PER_CLOSE // BATCH):
                append_trajectories(store, written, BATCH, CHARS)
                written += BATCH
    assert store.count(Trajectory) == written
    return (kilobytes("VmHWM:") - before) / 2**10


@pytest.mark.slow
def test_a_close_holds_a_bounded_amount_of_memory_as_the_tables_grow(tmp_path: Path) -> None:
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        growth = pool.apply(peak_growth_mb, (str(tmp_path / "s.duckdb"), ROW_GROUP_ROWS))
    print(f"peak RSS growth over {ROWS} rows and their closes: {growth:.0f} MB")
    assert growth < ALLOWED_MB
