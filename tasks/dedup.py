"""Near-duplicate questions: keep the first of each pair, reject the other with the kept id.

Meaning (unchanged from the all-pairs version): rapidfuzz `token_sort_ratio` (0-100) over
normalised questions (lower case, word characters only), compared within one block = the same
set of servers (the same question over other servers is another tool-use task). A pair at or
above the threshold (default 0.9 x 100) is a duplicate; the task earlier in the order given
(prior runs first, then plan order) is kept, and a later task is compared only with tasks
still kept. `token_sort_ratio` rather than `token_set_ratio`: the set ratio scores 100
whenever one question's words are a subset of the other's, which would fold a short question
into any longer one that mentions the same words.

Method: the exact ratio runs only on candidate pairs, found by MinHash LSH: datasketch's
`MinHash` (computed for many texts at once, `minhash_signatures`) over the set of the question's word prefixes (PREFIX bytes of each word: a plural or
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
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import NamedTuple

import datasketch
import numpy as np
from datasketch import MinHash
from rapidfuzz import fuzz, process

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
_PERMUTATIONS = MinHash(num_perm=BANDS * ROWS, seed=MINHASH_SEED).permutations  # (2, perms) uint32
_ASCII_WORDS = (
    bytes(  # A-Z to a-z, other bytes but [a-z0-9_] to a space
        byte + 32 if 65 <= byte <= 90 else byte if chr(byte).isalnum() or byte == 95 else 32
        for byte in range(128)
    )
    + b" " * 128
)
_ASCII_SPACE = np.zeros(256, dtype=bool)  # what bytes.split() splits on
_ASCII_SPACE[list(b" \t\n\r\x0b\x0c")] = True
_PREFIX_MASKS = np.array([(1 << 8 * size) - 1 for size in range(PREFIX + 1)], dtype=np.uint64)
_SIGNATURE_TEXTS = 4_096  # texts hashed together: ~250k words, ~25 MB of word arrays
_GATHER_ROWS = 16_384  # permuted prefix rows (640 bytes each) gathered per numpy call: ~10 MB
_MERGE_PAIRS = 1 << 22  # pairs collected before folding them into the distinct ones


class DedupItem(NamedTuple):
    """One ok task as the dedup pass sees it: id, block (sorted server ids), the normalised
    question with its words sorted (`comparable_text`)."""

    task_id: str
    block: tuple[str, ...]
    text: str


def normalise_question(question: str) -> str:
    """Lower case, word characters (`\\w`) only, words joined by one space. An ASCII question
    takes a byte translation (there `\\w` is [A-Za-z0-9_] and lower() maps A-Z only): the
    regex's result, several times faster; any other question takes the regex."""
    if question.isascii():
        return b" ".join(question.encode().translate(_ASCII_WORDS).split()).decode()
    return " ".join(WORD.findall(question.lower()))


def dedup_item(task_id: str, question: str, server_ids: Iterable[str]) -> DedupItem:
    """The block is the set of servers, sorted: the same servers in another order are one."""
    return DedupItem(task_id, tuple(sorted(set(server_ids))), comparable_text(question))


def comparable_text(question: str) -> str:
    """The normalised question with its words sorted: `token_sort_ratio` of two questions is
    `fuzz.ratio` of these (it sorts the words itself), and the MinHash takes the set of words,
    so sorting once per task instead of once per compared pair changes no score and no key,
    at an eighth of the comparison's cost. Two questions with the same words in another order
    score 100 against each other and the same against any third: exact copies here."""
    return " ".join(sorted(normalise_question(question).split(" ")))


def lsh_scheme(threshold: float) -> str:
    """The index's validity tag: the LSH parameters and the threshold the kept set was decided
    at. Another threshold re-decides every ok task, as the all-pairs pass did on each run."""
    return f"{LSH_SCHEME}-t{threshold!r}"


def band_keys(items: Sequence[DedupItem]) -> np.ndarray:
    """(len(items), BANDS) int64 LSH band keys: equal keys = same block and same band values.

    The MinHash is datasketch's (`minhash_signatures`). The key mixes block, band number and
    the band's values with splitmix64 in numpy: one hashlib call per band would cost more
    than the MinHash."""
    signatures = minhash_signatures([item.text for item in items])
    block_hashes: dict[tuple[str, ...], int] = {}
    for item in items:
        if item.block not in block_hashes:
            block_hashes[item.block] = _block_hash(item.block)
    blocks = np.array([block_hashes[item.block] for item in items], dtype=np.uint64)
    keys = blocks.reshape(-1, 1) ^ _BAND_SALT
    for values in np.moveaxis(signatures.reshape(len(items), BANDS, ROWS), 2, 0):
        keys = _splitmix(keys ^ values.astype(np.uint64))
    return keys.view(np.int64)


def minhash_signatures(texts: Sequence[str]) -> np.ndarray:
    """(len(texts), BANDS * ROWS) uint32: for each text, datasketch's MinHash of the set of
    its words' PREFIX-byte prefixes, `MinHash(BANDS * ROWS, seed=MINHASH_SEED,
    hashfunc=zlib.crc32)` (affine32: fmix32 of the crc32, then a * h + b mod 2**32 per
    permutation, the minimum over the set; no word: 2**32 - 1 throughout).

    Equal to datasketch value for value (tests/synthesize/test_dedup_fast_paths.py), computed for
    all texts at once: each distinct prefix is hashed and permuted once, and the minimum is
    taken over the texts with the same number of distinct prefixes together, one numpy call
    per group, where `update_batch` cost a dozen Python-level calls per text."""
    signatures = np.full((len(texts), BANDS * ROWS), np.iinfo(np.uint32).max, dtype=np.uint32)
    for first in range(0, len(texts), _SIGNATURE_TEXTS):
        batch = texts[first : first + _SIGNATURE_TEXTS]
        _fill_signatures(batch, signatures[first : first + len(batch)])
    return signatures


def _fill_signatures(texts: Sequence[str], signatures: np.ndarray) -> None:
    """`minhash_signatures` of `texts` into `signatures` (filled with the initial values)."""
    text_of, prefix_code = _word_prefixes(texts)
    if not len(text_of):
        return
    codes = sorted_unique(prefix_code)
    prefix_of = np.searchsorted(codes, prefix_code)
    crcs = [zlib.crc32(int(code).to_bytes(8, "little")[: int(code) >> 56]) for code in codes]
    permuted = _fmix32(np.array(crcs, dtype=np.uint32)).reshape(-1, 1) * _PERMUTATIONS[0]
    permuted += _PERMUTATIONS[1]  # (distinct prefixes, permutations): a * h + b, wrapping
    # each text's distinct prefixes, texts in order (a set: a repeated word changes no minimum)
    pairs = sorted_unique(text_of * len(codes) + prefix_of)
    text_of, prefix_of = np.divmod(pairs, len(codes))
    counts = np.bincount(text_of, minlength=len(texts))
    starts = np.cumsum(counts) - counts
    by_count = np.argsort(counts, kind="stable")
    for group in np.split(by_count, np.flatnonzero(np.diff(counts[by_count])) + 1):
        count = int(counts[group[0]])
        if count == 0:
            continue  # no word: datasketch's initial values
        step = max(1, _GATHER_ROWS // count)
        for first in range(0, len(group), step):
            rows = group[first : first + step]
            at = (starts[rows].reshape(-1, 1) + np.arange(count)).ravel()
            signatures[rows] = permuted[prefix_of[at]].reshape(len(rows), count, -1).min(axis=1)


def _word_prefixes(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(text number, prefix code) of every word (split on ASCII whitespace, as bytes.split):
    the code packs the word's first PREFIX bytes (PREFIX < 8) little-endian and their count
    in the top byte, so equal codes = equal prefixes."""
    encoded = [text.encode() for text in texts]
    buffer = np.frombuffer(b" ".join(encoded) + b" ", dtype=np.uint8)
    in_word = ~_ASCII_SPACE[buffer]
    edges = np.flatnonzero(np.diff(in_word.view(np.int8), prepend=np.int8(0)))
    starts, ends = edges[0::2], edges[1::2]  # the buffer ends in a space: every word ends
    lengths = np.fromiter((len(text) + 1 for text in encoded), dtype=np.int64, count=len(texts))
    words_before = np.searchsorted(starts, np.cumsum(lengths))  # words up to each text's end
    text_of = np.repeat(np.arange(len(texts)), np.diff(words_before, prepend=0))
    length = np.minimum(ends - starts, PREFIX).astype(np.uint64)
    padded = np.concatenate((buffer, np.zeros(8, dtype=np.uint8)))
    # the 8 bytes from each position, as one unaligned little-endian integer
    eight_bytes = np.ndarray((len(buffer),), dtype="<u8", buffer=padded, strides=(1,))
    code = eight_bytes[starts] & _PREFIX_MASKS[length] | length << np.uint64(56)
    return text_of, code


def sorted_unique(values: np.ndarray) -> np.ndarray:
    """np.unique by np.sort, which is vectorised: np.unique's argsort took 30 times longer."""
    values = np.sort(values)
    return values[np.concatenate(([True], values[1:] != values[:-1]))] if len(values) else values


def _fmix32(values: np.ndarray) -> np.ndarray:
    values = (values ^ (values >> np.uint32(16))) * np.uint32(0x85EBCA6B)
    values = (values ^ (values >> np.uint32(13))) * np.uint32(0xC2B2AE35)
    return values ^ (values >> np.uint32(16))


def _block_hash(block: tuple[str, ...]) -> int:
    return int.from_bytes(hashlib.blake2b("\0".join(block).encode(), digest_size=8).digest())


def _splitmix(values: np.ndarray) -> np.ndarray:
    values = (values ^ (values >> np.uint64(30))) * _MIX[0]
    values = (values ^ (values >> np.uint64(27))) * _MIX[1]
    return values ^ (values >> np.uint64(31))


def colliding_earlier(keys: np.ndarray) -> dict[int, list[int]]:
    """Row -> the earlier rows sharing at least one band key with it, ascending."""
    pairs = colliding_pairs(keys[:, band] for band in range(keys.shape[1]))
    return earlier_by_row(pairs, 0, len(keys))


def colliding_pairs(band_columns: Iterable[np.ndarray]) -> np.ndarray:
    """The distinct (later, earlier) row pairs sharing a value in at least one of the equally
    long columns, packed `later << 32 | earlier` (int64), ascending. Per column, the rows
    whose value repeats (a plain sort finds the values) are sorted stably by value; a run of
    k equal values gives its k(k-1)/2 pairs. Memory: one column's sort and pairs at a time,
    besides the distinct pairs so far."""
    found = np.empty(0, dtype=np.int64)
    parts: list[np.ndarray] = []
    for column in band_columns:
        rows = rows_with_repeated_values(column)
        if not len(rows):
            continue
        order = rows[np.argsort(column[rows], kind="stable")]
        ordered = column[order]
        position = np.arange(len(order))
        starts = np.concatenate(([True], ordered[1:] != ordered[:-1]))
        group_start = np.maximum.accumulate(np.where(starts, position, 0))
        rank = position - group_start  # earlier rows with this value
        offset = np.arange(int(rank.sum())) - np.repeat(np.cumsum(rank) - rank, rank)
        earlier = order[np.repeat(group_start, rank) + offset]
        parts.append((np.repeat(order, rank).astype(np.int64) << 32) | earlier)
        if sum(len(part) for part in parts) > max(len(found), _MERGE_PAIRS):
            found = sorted_unique(np.concatenate([found, *parts]))
            parts = []
    return sorted_unique(np.concatenate([found, *parts])) if parts else found


def rows_with_repeated_values(column: np.ndarray) -> np.ndarray:
    """The rows (ascending) whose value occurs more than once in `column`."""
    ordered = np.sort(column)
    repeated = sorted_unique(ordered[1:][ordered[1:] == ordered[:-1]])
    if not len(repeated):
        return np.empty(0, dtype=np.int64)
    at = np.minimum(np.searchsorted(repeated, column), len(repeated) - 1)
    return np.flatnonzero(repeated[at] == column)


def earlier_by_row(pairs: np.ndarray, first: int, stop: int) -> dict[int, list[int]]:
    """Row in [first, stop) -> its earlier rows (ascending), from `colliding_pairs`."""
    later, earlier = pairs_between(pairs, first, stop)
    return group_by_later(later, earlier)


def pairs_between(pairs: np.ndarray, first: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
    """(later, earlier) rows of the `colliding_pairs` whose later row is in [first, stop)."""
    lo, hi = np.searchsorted(pairs, [first << 32, stop << 32])
    later, earlier = np.divmod(pairs[lo:hi], np.int64(1) << 32)
    return later, earlier


def group_by_later(later: np.ndarray, earlier: np.ndarray) -> dict[int, list[int]]:
    """Later row -> its earlier rows, in their order, from pairs sorted by later row."""
    starts = np.flatnonzero(np.diff(later, prepend=-1)).tolist()
    if not starts:
        return {}
    earlier_rows = earlier.tolist()
    return {
        row: earlier_rows[start:end]
        for row, start, end in zip(
            later[starts].tolist(), starts, [*starts[1:], len(earlier_rows)], strict=True
        )
    }


def matching(later_texts: Sequence[str], earlier_texts: Sequence[str], cutoff: float) -> np.ndarray:
    """Whether each pair of word-sorted texts scores >= cutoff (0-100): `fuzz.ratio` (the
    questions' `token_sort_ratio`), all pairs in rapidfuzz's C loop (`cpdist`), where one
    Python call per pair cost more than the ratio."""
    if not later_texts:
        return np.zeros(0, dtype=bool)
    scores = process.cpdist(
        later_texts, earlier_texts, scorer=fuzz.ratio, score_cutoff=cutoff, dtype=np.float64
    )
    return scores >= cutoff


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
    pairs = colliding_pairs(keys[distinct][:, band] for band in range(keys.shape[1]))
    later, earlier = (distinct[rows] for rows in np.divmod(pairs, np.int64(1) << 32))
    same_block = [items[a].block == items[b].block for a, b in zip(later, earlier, strict=True)]
    passing = matching([items[a].text for a in later], [items[b].text for b in earlier], cutoff)
    ok = passing & np.array(same_block, dtype=bool)
    prior_kept = {
        row: kept
        for row, candidates in prior.items()
        if (kept := first_match(items[row], candidates, cutoff))
    }
    dropped_rows: dict[int, str] = {}
    decide_rows(
        range(len(items)),
        lambda row: items[row].task_id,
        prior_kept,
        group_by_later(later[ok], earlier[ok]),
        copies,
        dropped_rows,
    )
    return {items[row].task_id: kept for row, kept in dropped_rows.items()}


def decide_rows(
    rows: Iterable[int],
    task_id_at: Callable[[int], str],
    prior_kept: Mapping[int, str],
    matches: Mapping[int, Sequence[int]],
    copies: Mapping[int, int],
    dropped_rows: dict[int, str],
) -> None:
    """Decide `rows` in order, adding each dropped row -> kept task id to `dropped_rows` (which
    holds the earlier rows' decisions). A row with a match among the kept tasks from before
    (`prior_kept`: the first, in priority order) is dropped for it; else for its first
    `matches` row (earlier rows on its block scoring >= the cutoff, ascending) still kept. A
    copy (`copies`: row -> its first row) shares its first's fate."""
    for row in rows:
        if row in copies:
            first = copies[row]
            dropped_rows[row] = dropped_rows.get(first) or task_id_at(first)
            continue
        kept = prior_kept.get(row) or next(
            (task_id_at(e) for e in matches.get(row, ()) if e not in dropped_rows), None
        )
        if kept is not None:
            dropped_rows[row] = kept


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
    """The id of the first candidate on the same block scoring >= cutoff (0-100), else None;
    `fuzz.ratio` of word-sorted texts = `token_sort_ratio` of the questions."""
    for candidate in candidates:
        if candidate.block == item.block and (
            fuzz.ratio(item.text, candidate.text, score_cutoff=cutoff) >= cutoff
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
