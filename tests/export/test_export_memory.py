"""The export's memory does not grow with the rows it exports (issue 14): measured with
tracemalloc over real DuckDB stores filled in bulk (tests/bulk_store.py)."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import pytest

import flows.export
from tests.export.seeding import export_to, fill_kept_trajectories
from toucan.config import Settings, load_settings
from toucan.store import Store

BATCH_ROWS = 50  # small batches: the rows of the batches in flight are the same in both runs


def export_peak_mb(folder: Path, settings: Settings, rows: int) -> float:
    """Peak traced memory (MB) of exporting `rows` kept trajectories (parquet + openai)."""
    store = Store(folder / f"{rows}.duckdb")
    fill_kept_trajectories(store, rows)
    tracemalloc.start()
    try:
        summary = export_to(store, settings, folder / f"out-{rows}", ["parquet", "openai"])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert summary.rows == rows
    return peak / 2**20


def test_exporting_five_times_the_rows_takes_no_more_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(flows.export, "BATCH_SIZE", BATCH_ROWS)
    settings = load_settings(profile="local")
    export_peak_mb(tmp_path, settings, 20)  # the first export's lazy imports are not counted
    small = export_peak_mb(tmp_path, settings, 200)
    large = export_peak_mb(tmp_path, settings, 1_000)
    # holding every row's source and output took ~25 KB a row: +20 MB for these 800 more
    assert large - small < 5, (small, large)
