"""A synthesize run's memory does not grow with the store (issue 14): on a store holding 100k
tasks and 100k stored model replies, a run of 1k new items allocates at most a few MB per 10k
store rows more than the same run on a store holding only the catalog.

Measured with tracemalloc (Python allocations, the fake model server's in this process
included) over the whole stage run. Before the reply cache looked replies up on demand
(toucan/llm/cache.py), every run loaded every stored reply: ~35 MB per 10k rows, 350 MB here.
"""

from __future__ import annotations

import asyncio
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest

from flows.runner import run_stage_async
from tests.bulk_store import fill_llm_cache, fill_tasks, index_tasks
from tests.fake_llm import FakeLlm
from tests.synthesize.seed import (
    FAKE_KEY_ENV,
    competent_model,
    fake_settings,
    seed_servers,
    write_config,
)
from toucan.store import Store

STORE_ROWS = 100_000  # tasks, and as many stored replies
ITEMS = 1_000  # new items of the measured run
MB_PER_10K_ROWS = 2.0  # allowed growth of the run's peak per 10k rows of the store


@pytest.fixture
def fake_llm(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeLlm]:
    monkeypatch.setenv(FAKE_KEY_ENV, "sk-fake")
    with FakeLlm(default=competent_model, record_requests=False) as server:
        yield server


def synthesize(store: Store, config: Path, items: int) -> None:
    settings = fake_settings(config, synthesize={"concurrency": 32})
    summary = asyncio.run(run_stage_async("synthesize", settings, store, limit=items, seed=7))
    assert summary.attempted == items, summary


def peak_mb_of_run(store: Store, config: Path) -> float:
    """tracemalloc peak (MB) of one synthesize run of ITEMS new items."""
    tracemalloc.start()
    try:
        synthesize(store, config, ITEMS)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak / 2**20


def test_synthesize_memory_does_not_grow_with_the_store(tmp_path: Path, fake_llm: FakeLlm) -> None:
    config = write_config(tmp_path / "toucan.yaml", fake_llm.base_url)
    small = Store(tmp_path / "small.duckdb")
    seed_servers(small)
    large = Store(tmp_path / "large.duckdb")
    servers = [server.server_id for server in seed_servers(large)]
    assert fill_tasks(large, STORE_ROWS, servers) == STORE_ROWS
    assert fill_llm_cache(large, STORE_ROWS) == STORE_ROWS
    assert index_tasks(large) == 0

    warm = Store(tmp_path / "warm.duckdb")
    seed_servers(warm)
    synthesize(warm, config, 20)  # warm-up: LiteLLM and the prompts load on first use
    baseline = peak_mb_of_run(small, config)
    loaded = peak_mb_of_run(large, config)

    store_rows = 2 * STORE_ROWS
    allowed = MB_PER_10K_ROWS * store_rows / 10_000
    print(f"peak {baseline:.1f} MB on the catalog, {loaded:.1f} MB with {store_rows} rows more")
    assert loaded - baseline <= allowed, (baseline, loaded, allowed)
