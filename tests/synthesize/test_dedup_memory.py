"""The near-duplicate pass's index probe holds this chunk's keys in memory, not the index's
(issue 14). Before, DuckDB estimated the index's unnested band keys at one row per task, so a
probe with more keys than the index had tasks made the index's keys (32 per task) the hash
join's build side: +103 MB for the 40k tasks here, 4.1 GB of the pass at 1M tasks.

Measured as the growth of the process's peak RSS (VmHWM, DuckDB's memory included), in a
fresh process so that nothing else of the test run counts."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import numpy as np

from flows.dedup import indexed_candidates
from tasks.dedup import BANDS
from toucan.records import DedupIndexEntry
from toucan.store import Store

INDEXED = 40_000  # tasks in the index: 1.28M band keys
PROBED = 2_000  # new tasks: 64k band keys, more than the index has rows
ALLOWED_MB = 50  # measured: 20 MB now, 103 MB with the index as the build side


def peak_growth_mb(path: str, keys: np.ndarray) -> float:
    """Run in a fresh process: peak RSS growth (MB) of one `indexed_candidates` call."""
    status = Path("/proc/self/status")

    def kilobytes(field: str) -> int:
        line = next(line for line in status.read_text().splitlines() if line.startswith(field))
        return int(line.split()[1])

    store = Store(path)
    assert indexed_candidates(store, keys[:10]) == {}  # warm-up: DuckDB's first open and query
    before = kilobytes("VmRSS:")
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    assert indexed_candidates(store, keys) == {}  # random keys share none
    return (kilobytes("VmHWM:") - before) / 2**10


def test_probing_the_index_does_not_hold_the_index_keys_in_memory(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.duckdb")
    store.ensure_schema()
    store.execute(
        f"INSERT INTO {DedupIndexEntry.__table__} "
        "SELECT 'task_' || i, 'bench', "
        f"list_transform(range({BANDS}), lambda b: (hash(i, b) >> 1)::BIGINT) FROM range(?) t(i)",
        [INDEXED],
    )
    keys = np.random.default_rng(1).integers(-(2**62), 2**62, size=(PROBED, BANDS))
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        growth = pool.apply(peak_growth_mb, (str(store.path), keys))
    print(f"peak RSS growth of the probe: {growth:.0f} MB")
    assert growth < ALLOWED_MB
