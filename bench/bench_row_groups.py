"""The memory of a DuckDB checkpoint when a table's row group fills (issue 14's 1M transients).

    .venv/bin/python bench/bench_row_groups.py [--rows 140000] [--row-group-size 16384]

Inserts `--rows` rows shaped like `llm_cache` (a 64-char key with a primary key, a ~1 KB JSON
reply), 2,000 at a time with a checkpoint after each, as a writing run does, into a fresh
file opened plainly (DuckDB's default row groups: 122,880 rows) and into one attached with
`ROW_GROUP_SIZE`. Each in a fresh process; printed: the process's peak RSS (VmHWM) and the
largest jump of its RSS across one insert and checkpoint, with the file size at that jump.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import duckdb

sys.path.insert(0, str(Path(__file__).resolve().parent))

from memory_sampler import peak_rss_mb

BATCH = 2_000


def rss_mb() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * 4096 / 2**20


def child(path: str, rows: int, row_group_size: int) -> None:
    if row_group_size:
        con = duckdb.connect()
        con.execute(f"ATTACH '{path}' AS store (ROW_GROUP_SIZE {row_group_size})")
        con.execute("USE store")
    else:
        con = duckdb.connect(path)
    con.execute("CREATE TABLE c (k VARCHAR PRIMARY KEY, reply JSON)")
    jump, at_rows, at_file, last = 0.0, 0, 0.0, rss_mb()
    for first in range(0, rows, BATCH):
        con.execute(
            "INSERT INTO c SELECT md5(i::VARCHAR) || md5((i + 1)::VARCHAR), "
            "json_object('text', repeat(md5(i::VARCHAR), 30), 'n', i) "
            f"FROM range({first}, {first + BATCH}) r(i)"
        )
        con.execute("CHECKPOINT")
        now = rss_mb()
        if now - last > jump:
            jump, at_rows, at_file = now - last, first + BATCH, Path(path).stat().st_size / 2**20
        last = now
    print(f"{peak_rss_mb():.0f} {jump:.0f} {at_rows} {at_file:.0f}")


def main(rows: int, row_group_size: int) -> None:
    print(f"{rows:,} rows of ~1 KB, {BATCH:,} per insert, a checkpoint after each")
    print(f"{'row groups':<22}{'peak RSS':>10}{'largest jump':>14}{'at rows':>9}{'file MB':>9}")
    for size in (0, row_group_size):
        with tempfile.TemporaryDirectory() as folder:
            path = str(Path(folder) / "rows.duckdb")
            command = [sys.executable, __file__, "--child", path, str(rows), str(size)]
            out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
            peak, jump, at_rows, at_file = out.split()
            label = "default (122,880)" if not size else f"ROW_GROUP_SIZE {size:,}"
            print(f"{label:<22}{peak:>8} MB{jump:>11} MB{at_rows:>9}{at_file:>9}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=140_000)
    parser.add_argument("--row-group-size", type=int, default=16_384)
    parser.add_argument("--child", nargs=3, metavar=("PATH", "ROWS", "SIZE"))
    arguments = parser.parse_args()
    if arguments.child:
        path, rows, size = arguments.child
        child(path, int(rows), int(size))
    else:
        main(arguments.rows, arguments.row_group_size)
