"""tests/bulk_store.py writes rows the pipeline reads back: tasks that validate as `Task` and
are all kept by the near-duplicate pass, and stored replies a cache over the store serves."""

from __future__ import annotations

from pathlib import Path

from tests.bulk_store import fill_llm_cache, fill_tasks, index_tasks
from toucan.llm.cache import CacheKey, LlmCache
from toucan.records import LlmCacheEntry, Task
from toucan.store import Store

ROWS = 2_000


def test_bulk_rows_read_back_as_records(tmp_path: Path) -> None:
    store = Store(tmp_path / "bulk.duckdb")
    assert fill_tasks(store, ROWS, ["server_a", "server_b"]) == ROWS
    assert fill_tasks(store, ROWS, ["server_a"]) == 0  # same ids: nothing new
    assert fill_llm_cache(store, ROWS) == ROWS

    tasks = store.select(Task)
    assert len({task.question for task in tasks}) == ROWS
    assert {tuple(task.server_ids) for task in tasks} == {("server_a",), ("server_b",)}
    assert all(t.target_tools[0].server_id == t.server_ids[0] for t in tasks)
    assert index_tasks(store) == 0  # unique questions: none is a near duplicate

    entry = store.select(LlmCacheEntry, "cache_key = (SELECT min(cache_key) FROM llm_cache)")[0]
    cache = LlmCache.load(store)
    reply = cache.get(CacheKey((entry.cache_key, entry.prompt_hash, entry.params_hash)))
    assert reply is not None and reply.cached and reply.text.startswith("reply ")
    unknown = "llm_" + "0" * 20
    assert cache.get(CacheKey((unknown, "", ""))) is None
    assert (cache.hits, cache.misses, cache.fetches) == (1, 1, 1)
    assert len(cache) == ROWS
