"""The near-duplicate pass over the store: ok tasks new to the index are compared, in priority
order, with the kept tasks the index held before the pass (a SQL join on LSH band keys) and
with each other (their candidate pairs found at once, staged on disk: flows/dedup_stage.py);
the kept ones join the index, the others are rejected as `near_duplicate`.

Incremental: a run reads only its new tasks and the few indexed tasks sharing a band key with
them, never every task of the store. From scratch (an old store, or a changed scheme) is the
same two passes over every ok task, CHUNK at a time, so memory stays bounded either way.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import orjson
import polars as pl

from flows.dedup_stage import StagedTasks, staging_folder
from tasks.dedup import (
    DedupItem,
    comparable_text,
    decide_rows,
    dedup_item,
    first_match,
    group_by_later,
    lsh_scheme,
    matching,
    pairs_between,
    sorted_unique,
)
from tasks.synthesize import STAGE
from toucan.records import DedupIndexEntry, Task
from toucan.store import Store

logger = logging.getLogger(__name__)

CHUNK = 50_000  # tasks per step: ~20 MB of questions and keys, an index probe's hash table ~100 MB

# The priority order: tasks of earlier synthesize runs first, then plan order (strategy, slot).
_JOIN_RUNS = "LEFT JOIN runs r ON r.run_id = t.run_id AND r.stage = ?"
_PRIORITY = (
    "coalesce(r.started_at, t.created_at), t.strategy, "
    "coalesce(try_cast(json_extract_string(t.metadata, '$.slot') AS BIGINT), 0), t.task_id"
)
_OK_ORIGINAL = "t.status = 'ok' AND t.kind = 'original'"


def dedup_pending_tasks(store: Store, threshold: float, chunk: int = CHUNK) -> dict[str, str]:
    """Dedup the ok original tasks not yet in the index; returns dropped id -> kept id.

    Writes per chunk: the dropped tasks as `rejected` / `near_duplicate` with
    `metadata.duplicate_of`, and index rows for the kept ones. Idempotent: a second call finds
    nothing new. Index rows of another scheme (`tasks.dedup.lsh_scheme`) are deleted first, so
    every ok task is decided again under the current parameters and threshold.

    Two passes over the new tasks. First they are staged on disk (`StagedTasks`: texts,
    blocks, band keys), and their candidate pairs among themselves found at once, one sort
    per band. Then, chunk by chunk in priority order, each task is compared with the
    candidates the index held before this pass (a probe of the index's keys, only if it
    held any), then with its earlier candidates of this pass still kept."""
    scheme = lsh_scheme(threshold)
    store.execute(f"DELETE FROM {DedupIndexEntry.__table__} WHERE scheme <> ?", [scheme])
    indexed_before = store.count(DedupIndexEntry)
    pending = pending_ids(store)
    if pending.is_empty():
        return {}
    dropped_rows: dict[int, str] = {}
    with staging_folder(store.path.parent) as folder:
        staged = StagedTasks(folder, pending["task_id"])
        try:
            for first in range(0, len(pending), chunk):
                staged.add(select_items(store, pending.slice(first, chunk)))
            staged.find_candidates(copies=threshold <= 1)  # ratio 100 passes any cutoff <= 100
            for first in range(0, len(pending), chunk):
                items = staged.items(first, min(first + chunk, len(pending)))
                found = decide_chunk(
                    store, staged, items, first, indexed_before > 0, threshold, dropped_rows
                )
                keys = staged.keys(first, first + len(items))
                write_outcome(store, [item.task_id for item in items], keys, found, scheme)
                logger.info("dedup: %d new tasks, %d near duplicates", len(items), len(found))
        finally:
            staged.close()
    task_ids = pending["task_id"]
    return {task_ids[row]: kept for row, kept in dropped_rows.items()}


def decide_chunk(
    store: Store,
    staged: StagedTasks,
    items: list[DedupItem],
    first: int,
    probe_index: bool,
    threshold: float,
    dropped_rows: dict[int, str],
) -> dict[str, str]:
    """Decide `items`, the staged tasks from position `first` on (`tasks.dedup.decide_rows`),
    adding them to `dropped_rows` (position -> kept id, every earlier position decided);
    returns their dropped id -> kept id. `probe_index`: whether the index held tasks before
    this pass (else it holds only this pass's, already among the staged candidates).

    Every candidate pair of the chunk is scored at once, but those whose earlier task of an
    earlier chunk is already dropped; those texts are read back from the staged file."""
    cutoff = threshold * 100
    later, earlier = pairs_between(staged.pairs, first, first + len(items))
    undecided_or_kept = [e >= first or e not in dropped_rows for e in earlier.tolist()]
    later, earlier = later[undecided_or_kept], earlier[undecided_or_kept]
    same_block = staged.block_of[later] == staged.block_of[earlier]
    later, earlier = later[same_block], earlier[same_block]
    before = sorted_unique(earlier[earlier < first])
    texts = np.array([*staged.texts_at(before), *(item.text for item in items)], dtype=object)
    at = np.where(earlier < first, np.searchsorted(before, earlier), len(before) + earlier - first)
    passing = matching(texts[len(before) + later - first].tolist(), texts[at].tolist(), cutoff)
    prior_kept: dict[int, str] = {}
    if probe_index:
        keys = staged.keys(first, first + len(items))
        for row, candidates in indexed_candidates(store, keys, exclude=staged.task_ids).items():
            if kept := first_match(items[row], candidates, cutoff):
                prior_kept[first + row] = kept

    def task_id_at(position: int) -> str:
        return items[position - first].task_id if position >= first else staged.task_ids[position]

    rows = range(first, first + len(items))
    matches = group_by_later(later[passing], earlier[passing])
    decide_rows(rows, task_id_at, prior_kept, matches, staged.copies, dropped_rows)
    return {
        item.task_id: dropped_rows[row]
        for row, item in zip(rows, items, strict=True)
        if row in dropped_rows
    }


def pending_ids(store: Store) -> pl.DataFrame:
    """The ok original tasks without an index row, in priority order: `task_id` and the
    row's `rowid` (a hint for `select_items`), as Arrow (a million ids are ~40 MB there,
    several times that as Python strings)."""
    return store.frame(
        f"SELECT t.task_id, t.rowid FROM tasks t {_JOIN_RUNS} "
        f"WHERE {_OK_ORIGINAL} AND NOT EXISTS "
        f"(SELECT 1 FROM {DedupIndexEntry.__table__} i WHERE i.task_id = t.task_id) "
        f"ORDER BY {_PRIORITY}",
        [STAGE],
    )


def select_items(store: Store, ids: pl.DataFrame) -> list[DedupItem]:
    """The tasks named in `ids` (`pending_ids` rows), in its order. Read first within the
    chunk's rowid range: tasks in priority order are mostly in table order, so DuckDB skips
    the row groups outside it, where a plain join read every task's question each chunk (a
    pass at 1M tasks read 20M). A rowid is no stable name (a checkpoint may move rows): if
    the range misses a task, it is read again without it."""
    wanted = ids.with_row_index("position")
    sql = (
        "SELECT t.task_id, t.question, t.server_ids FROM wanted w "
        "JOIN tasks t ON t.task_id = w.task_id {} ORDER BY w.position"
    )
    rows = store.query_with(
        sql.format("WHERE t.rowid BETWEEN ? AND ?"),
        {"wanted": wanted},
        [ids["rowid"].min(), ids["rowid"].max()],
    )
    if len(rows) < len(ids):
        rows = store.query_with(sql.format(""), {"wanted": wanted})
    return _items(rows)


def indexed_candidates(
    store: Store, keys: np.ndarray, exclude: pl.Series | None = None
) -> dict[int, list[DedupItem]]:
    """Row of `keys` -> the still-ok indexed tasks sharing a band key with it, by priority,
    but those in `exclude`.

    Two reads, each holding only this chunk's share in memory: the (row, task id) hits, then
    the hit tasks once each, ranked by priority. Each hit row shares its task's DedupItem."""
    hits = band_hits(store, keys)
    if exclude is not None:
        hits = hits.join(exclude.to_frame("task_id"), on="task_id", how="anti")
    if hits.is_empty():
        return {}
    # IN, not a join: DuckDB builds a semi-join on the hit ids, where a join on the ok tasks
    # (estimated at a fifth of the table) built a hash table of every ok task's question
    tasks = store.query_with(
        f"SELECT t.task_id, t.question, t.server_ids FROM tasks t {_JOIN_RUNS} "
        f"WHERE {_OK_ORIGINAL} AND t.task_id IN (SELECT task_id FROM hit_ids) "
        f"ORDER BY {_PRIORITY}",
        {"hit_ids": hits.select(pl.col("task_id").unique())},
        [STAGE],
    )
    ranked = _items(tasks)
    ranks = pl.DataFrame(
        {"task_id": [item.task_id for item in ranked], "rank": range(len(ranked))},
        schema={"task_id": pl.Utf8, "rank": pl.Int64},
    )
    by_row = (
        hits.join(ranks, on="task_id")  # a task no longer ok has no rank: not a candidate
        .sort("row", "rank")
        .group_by("row", maintain_order=True)
        .agg("rank")
    )
    return {
        row: [ranked[rank] for rank in row_ranks]
        for row, row_ranks in zip(by_row["row"].to_list(), by_row["rank"].to_list(), strict=True)
    }


def band_hits(store: Store, keys: np.ndarray) -> pl.DataFrame:
    """The distinct (row of `keys`, indexed task id) pairs sharing a band key, as Arrow.

    The index's keys are enumerated by a cross product with the band numbers, not by
    `unnest`: DuckDB estimates an unnest at one row per list, so a probe of more keys than the
    index has rows (50k tasks x 32 bands) became the hash join's probe side and the index's
    keys (30M at 1M tasks) its build side, all in memory. Estimated right, the build side is
    the smaller: at most the probe's keys. Measured (peak RSS growth of one call, 50k tasks
    probed): 191 MB against a 300k-task index (757 MB before), 378 MB against 1M; what grows
    is DuckDB's cache of the index blocks read (~256 bytes a task), evictable: 163 MB at 1M
    under TOUCAN_STORE_MEMORY_LIMIT=150MB."""
    probe = pl.DataFrame(
        {"row": np.repeat(np.arange(len(keys)), keys.shape[1]), "band_key": keys.ravel()}
    )
    return store.frame(
        f"SELECT DISTINCT p.row, i.task_id FROM {DedupIndexEntry.__table__} i "
        f"CROSS JOIN range(1, {keys.shape[1] + 1}) b(band) "
        "JOIN probe p ON p.band_key = i.band_keys[b.band]",
        frames={"probe": probe},
    )


def write_outcome(
    store: Store, task_ids: list[str], keys: np.ndarray, dropped: dict[str, str], scheme: str
) -> None:
    """Dropped items rejected, then kept items into the index. A crash between the two heals
    itself: whatever was not written is still new to the next pass and decided the same way."""
    reject_near_duplicates(store, dropped)
    kept = np.array([task_id not in dropped for task_id in task_ids], dtype=bool)
    if not kept.any():
        return
    store.insert_frame(
        DedupIndexEntry,
        pl.DataFrame(
            {
                "task_id": [task_id for task_id in task_ids if task_id not in dropped],
                "scheme": scheme,
                "band_keys": pl.Series(keys[kept]).cast(pl.List(pl.Int64)),
            }
        ),
    )


def reject_near_duplicates(store: Store, dropped: dict[str, str]) -> None:
    """The dropped tasks as `tasks.dedup.mark_near_duplicates` rewrites them (rejected,
    near_duplicate, the kept id as `metadata.duplicate_of`), by one UPDATE: reading each as a
    Task and upserting it back cost more than the whole decision."""
    if not dropped:
        return
    ids = pl.DataFrame({"task_id": sorted(dropped)})
    rows = store.query_with(
        "SELECT t.task_id, t.metadata FROM tasks t JOIN ids USING (task_id)", {"ids": ids}
    )
    metadata = {
        task_id: orjson.dumps(
            {**orjson.loads(cell or "{}"), "duplicate_of": dropped[task_id]},
            option=orjson.OPT_NON_STR_KEYS,
        ).decode()
        for task_id, cell in rows
    }
    if not metadata:
        return
    store.update_frame(
        Task,
        pl.DataFrame(
            {
                "task_id": list(metadata),
                "status": "rejected",
                "reason": "near_duplicate",
                "metadata": list(metadata.values()),
            }
        ),
    )


def _items(rows: Sequence[Sequence[Any]]) -> list[DedupItem]:
    """DedupItems of (task_id, question, server_ids JSON) rows; one parse per distinct
    server list (a few thousand blocks for a million tasks)."""
    blocks: dict[str | None, tuple[str, ...]] = {}
    items = []
    for task_id, question, server_ids in rows:
        if server_ids not in blocks:
            blocks[server_ids] = dedup_item("", "", orjson.loads(server_ids or "[]")).block
        items.append(DedupItem(task_id, blocks[server_ids], comparable_text(question or "")))
    return items
