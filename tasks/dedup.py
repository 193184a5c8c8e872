"""Near-duplicate questions: keep the first of each pair, reject the other with the kept id.

Meaning (unchanged from the all-pairs version): rapidfuzz `token_sort_ratio` (0-100) over
normalised questions (lower case, word characters only), compared within one block = the same
set of servers (the same question over other servers is another tool-use task). A pair at or
above the threshold (default 0.9 x 100) is a duplicate; the task earlier in the order given
(prior runs first, then plan order) is kept, and a later task is compared only with tasks
still kept. `token_sort_ratio` rather than `token_set_ratio`: the set ratio scores 100
whenever one question's words are a subset of the other's, which would fold a short question
into any longer one that mentions the same words.

Method: the exact ratio runs only on candidate pairs, found by MinHash LSH: datasketch
`MinHash` over the set of the question's word prefixes (PREFIX bytes of each word: a plural or
tense ending, small for the ratio, then changes no shingle, where whole words lost a shingle
per edit and missed short pairs at ratio 90), BANDS bands of ROWS values; two questions share
a band key with probability 1 - (1 - J**ROWS)**BANDS for Jaccard J. Each band key folds in the
block, so a shared key already means "same servers". Cost grows with the number of tasks
(times the candidates per task), not with the square of a block's size. LSH can miss a pair
whose ratio passes the threshold: `bench/bench_dedup.py` measures that recall against the
all-pairs method, and PREFIX, BANDS and ROWS were chosen there (recall >= 0.99 at 0.9).
"""

from __future__ import annotations

import hashlib
import re
import zlib
from collections.abc import Iterable, Mapping, Sequence
from typing import NamedTuple

import datasketch
import numpy as np
import polars as pl
from datasketch import MinHash
from rapidfuzz import fuzz

from toucan.records import Task

WORD = re.compile(r"\w+")
PREFIX = 4
BANDS = 32
ROWS = 5
MINHASH_SEED = 1
# What the stored band keys depend on: a change here makes the index stale (it is rebuilt).
LSH_SCHEME = (
    f"prefix{PREFIX}-minhash-affine32-s{MINHASH_SEED}-b{BANDS}r{ROWS}-ds{datasketch.__version__}"
)
_MIX = (np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB))  # splitmix64 finalizer
_BAND_SALT = np.arange(1, BANDS + 1, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)


class DedupItem(NamedTuple):
    """One ok task as the dedup pass sees it: id, block (sorted server ids), normalised text."""

    task_id: str
    block: tuple[str, ...]
    text: str


def normalise_question(question: str) -> str:
    return " ".join(WORD.findall(question.lower()))


def dedup_item(task_id: str, question: str, server_ids: Iterable[str]) -> DedupItem:
    """The block is the set of servers, sorted: the same servers in another order are one."""
    return DedupItem(task_id, tuple(sorted(set(server_ids))), normalise_question(question))


def lsh_scheme(threshold: float) -> str:
    """The index's validity tag: the LSH parameters and the threshold the kept set was decided
    at. Another threshold re-decides every ok task, as the all-pairs pass did on each run."""
    return f"{LSH_SCHEME}-t{threshold!r}"


def band_keys(items: Sequence[DedupItem]) -> np.ndarray:
    """(len(items), BANDS) int64 LSH band keys: equal keys = same block and same band values.

    The MinHash is datasketch's (affine32 scheme, crc32 of each distinct word prefix:
    deterministic across processes, unlike `hash`). The key mixes block, band number and the band's values
    with splitmix64 in numpy: one hashlib call per band would cost more than the MinHash."""
    minhash = MinHash(num_perm=BANDS * ROWS, seed=MINHASH_SEED, hashfunc=zlib.crc32)
    signatures = np.empty((len(items), BANDS * ROWS), dtype=np.uint32)
    for row, item in enumerate(items):
        minhash.clear()
        minhash.update_batch({word[:PREFIX] for word in item.text.encode().split()})
        signatures[row] = minhash.hashvalues
    blocks = np.array([_block_hash(item.block) for item in items], dtype=np.uint64)
    keys = blocks.reshape(-1, 1) ^ _BAND_SALT
    for values in np.moveaxis(signatures.reshape(len(items), BANDS, ROWS), 2, 0):
        keys = _splitmix(keys ^ values.astype(np.uint64))
    return keys.view(np.int64)


def _block_hash(block: tuple[str, ...]) -> int:
    return int.from_bytes(hashlib.blake2b("\0".join(block).encode(), digest_size=8).digest())


def _splitmix(values: np.ndarray) -> np.ndarray:
    values = (values ^ (values >> np.uint64(30))) * _MIX[0]
    values = (values ^ (values >> np.uint64(27))) * _MIX[1]
    return values ^ (values >> np.uint64(31))


def colliding_earlier(keys: np.ndarray) -> dict[int, list[int]]:
    """Row -> the earlier rows sharing at least one band key with it, ascending (polars join)."""
    rows = pl.DataFrame(
        {"row": np.repeat(np.arange(len(keys)), keys.shape[1]), "band_key": keys.ravel()}
    )
    pairs = (
        rows.join(rows, on="band_key", suffix="_earlier")
        .filter(pl.col("row_earlier") < pl.col("row"))
        .select("row", "row_earlier")
        .unique()
        .group_by("row")
        .agg(pl.col("row_earlier").sort())
    )
    return dict(zip(pairs["row"].to_list(), pairs["row_earlier"].to_list(), strict=True))


def keep_first(
    items: Sequence[DedupItem],
    keys: np.ndarray,
    prior: Mapping[int, Sequence[DedupItem]],
    threshold: float,
) -> dict[str, str]:
    """Map dropped task id -> kept task id for `items` (in priority order, rows of `keys`).

    `prior[row]` are kept tasks from before these items (the stored index's candidates for
    that row), in priority order: they come first. An exact copy of an earlier item (same
    block, same text) shares that item's fate without entering the LSH join, so a run of
    identical questions costs linear, not quadratic, work."""
    cutoff = threshold * 100
    copies = exact_copies(items, cutoff)
    distinct = np.array([row for row in range(len(items)) if row not in copies], dtype=np.int64)
    earlier = {
        int(distinct[row]): [int(distinct[e]) for e in rows]
        for row, rows in colliding_earlier(keys[distinct]).items()
    }
    dropped_rows: dict[int, str] = {}
    for row, item in enumerate(items):
        if row in copies:
            first = copies[row]
            dropped_rows[row] = dropped_rows.get(first, items[first].task_id)
            continue
        in_items = (items[e] for e in earlier.get(row, ()) if e not in dropped_rows)
        kept = first_match(item, prior.get(row, ()), cutoff) or first_match(item, in_items, cutoff)
        if kept is not None:
            dropped_rows[row] = kept
    return {items[row].task_id: kept for row, kept in dropped_rows.items()}


def exact_copies(items: Sequence[DedupItem], cutoff: float) -> dict[int, int]:
    """Row -> the row of the first item with the same block and text. Identical texts score
    100, so a copy is a duplicate of whatever its first becomes, unless the cutoff is above 100."""
    if cutoff > 100:
        return {}
    firsts: dict[tuple[tuple[str, ...], str], int] = {}
    return {
        row: first
        for row, item in enumerate(items)
        if (first := firsts.setdefault((item.block, item.text), row)) != row
    }


def first_match(item: DedupItem, candidates: Iterable[DedupItem], cutoff: float) -> str | None:
    """The id of the first candidate on the same block scoring >= cutoff (0-100), else None."""
    for candidate in candidates:
        if candidate.block == item.block and (
            fuzz.token_sort_ratio(item.text, candidate.text, score_cutoff=cutoff) >= cutoff
        ):
            return candidate.task_id
    return None


def find_near_duplicates(ordered_tasks: Sequence[Task], threshold: float) -> dict[str, str]:
    """Map dropped task id -> kept task id, for `ok` tasks in priority order (first is kept).

    In memory, over the tasks given; the store-backed incremental pass is
    `flows.dedup.dedup_pending_tasks`, with the same candidates and the same choice."""
    items = [
        dedup_item(task.task_id, task.question, task.server_ids)
        for task in ordered_tasks
        if task.status == "ok"
    ]
    if not items:
        return {}
    return keep_first(items, band_keys(items), {}, threshold)


def mark_near_duplicates(dropped: dict[str, str], tasks: Sequence[Task]) -> list[Task]:
    """The dropped tasks rewritten as rejections (reason near_duplicate, kept id in metadata)."""
    by_id = {task.task_id: task for task in tasks}
    return [
        by_id[task_id].model_copy(
            update={
                "status": "rejected",
                "reason": "near_duplicate",
                "metadata": {**by_id[task_id].metadata, "duplicate_of": kept_id},
            }
        )
        for task_id, kept_id in sorted(dropped.items())
    ]
