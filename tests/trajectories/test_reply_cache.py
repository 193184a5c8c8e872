"""The trajectories batches do not carry the stored replies (issue 14): what the runner hands
each batch (`batch_kwargs` and `batch_args`, pickled as a Dask worker would get it) holds the
64-bit key prefixes of the teachers' stored replies, 8 bytes a row, and the memory the flow
spends making it does not grow by a reply per row; a stored reply is still served, fetched
from the store by key.

Real plan over a real DuckDB store filled in SQL (tests/bulk_store.py). Before, every stored
teacher reply rode along: ~1.3 KB a row pickled, ~3.5 KB a row in memory.
"""

from __future__ import annotations

import pickle
import tracemalloc
from pathlib import Path
from typing import Any

from flows.registry import stage
from flows.run_context import reading_run
from tests.bulk_store import fill_llm_cache, fill_task_ratings, fill_tasks
from tests.synthesize.seed import TEACHER, fake_settings, write_config
from tests.trajectories.helpers import server_row, tiny_spec
from toucan.llm.cache import CacheKey
from toucan.store import Store

TEACHER_MODEL = f"openai/{TEACHER}"  # the LiteLLM model string its replies are stored under
TASKS = 40
REPLIES = (1_000, 20_000)  # stored teacher replies, small and large store
OTHER_REPLIES = 5_000  # another model's: no batch of this stage can hit them
BYTES_PER_ROW = 16  # allowed pickled growth per stored teacher reply (a prefix is 8)
MB_ALLOWED = 2.0  # allowed growth of the tracemalloc peak, small to large store


def seeded_store(path: Path, tmp_path: Path) -> Store:
    """Kept tasks on one server, and another model's stored replies."""
    store = Store(path)
    server = server_row(tiny_spec(tmp_path / "tiny.log", name="tiny"))
    store.upsert([server])
    assert fill_tasks(store, TASKS, [server.server_id]) == TASKS
    assert fill_task_ratings(store) == TASKS  # every task kept: a teacher task
    assert fill_llm_cache(store, OTHER_REPLIES, tag="other") == OTHER_REPLIES
    return store


def first_batch_handed_out(store: Store, config: Path) -> tuple[dict[str, Any], int, float]:
    """(what the runner passes the first batch, its pickled size in bytes, tracemalloc peak
    in MB while the job plans and makes it), as `stage_steps` does."""
    settings = fake_settings(config, trajectories={"styles": ["function-calling"]})
    job = stage("trajectories").job(settings, {"teachers": None, "styles": None, "limit": None})
    with store.holding(), reading_run(store, settings, job.name, job.run_params()) as ctx:
        tracemalloc.start()
        try:
            ctx.plan = job.plan(ctx)
            batch = next(iter(ctx.plan.batches))
            handed = {"batch": batch, **job.batch_kwargs(ctx), **job.batch_args(batch)}
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    return handed, len(pickle.dumps(handed)), peak / 2**20


def test_trajectory_batches_carry_key_prefixes_not_the_stored_replies(tmp_path: Path) -> None:
    config = write_config(tmp_path / "toucan.yaml", "http://127.0.0.1:9")  # never called
    store = seeded_store(tmp_path / "s.duckdb", tmp_path)
    sizes, peaks = [], []
    for n, replies in enumerate(REPLIES):
        more = replies - (REPLIES[n - 1] if n else 0)
        assert fill_llm_cache(store, more, tag=f"teacher{n}", model=TEACHER_MODEL) == more
        handed, pickled, peak = first_batch_handed_out(store, config)
        sizes.append(pickled)
        peaks.append(peak)
    small, large = REPLIES
    print(
        f"first batch pickled: {sizes[0] / 1e3:.0f} KB with {small} stored teacher replies, "
        f"{sizes[1] / 1e3:.0f} KB with {large}; peak {peaks[0]:.1f} MB, {peaks[1]:.1f} MB"
    )
    assert sizes[1] - sizes[0] <= BYTES_PER_ROW * (large - small), sizes
    assert peaks[1] - peaks[0] <= MB_ALLOWED, peaks

    cache = handed["cache"]
    assert len(cache) == large  # the teacher's rows, by prefix; the other model's are not
    # the batch's copy still serves a stored teacher reply, looked up in the store by its key
    (key,) = store.query("SELECT cache_key FROM llm_cache WHERE model = ? LIMIT 1", [TEACHER_MODEL])
    copy = pickle.loads(pickle.dumps(cache)).fork()
    reply = copy.get(CacheKey((key[0], "", "")))
    assert reply is not None and reply.cached and reply.text.startswith("reply ")
    assert copy.fetches == 1 and copy.drain_new() == []
