"""The vectorised parts of the near-duplicate pass equal what they replace: the MinHash equals
datasketch's value for value (so stored band keys keep their meaning, LSH_SCHEME unchanged),
the ASCII fast path of `normalise_question` equals the regex, `fuzz.ratio` of word-sorted
texts equals `token_sort_ratio`, the sort-based candidate pairs equal every pair sharing a
band value, a chunk's read by rowid range misses no task, and staged texts read back whole."""

from __future__ import annotations

import random
import string
import zlib
from itertools import combinations
from pathlib import Path

import numpy as np
import polars as pl
from datasketch import MinHash
from rapidfuzz import fuzz

from flows.dedup import pending_ids, select_items
from flows.dedup_stage import StagedTasks
from tasks.dedup import (
    BANDS,
    MINHASH_SEED,
    PREFIX,
    ROWS,
    WORD,
    DedupItem,
    colliding_pairs,
    comparable_text,
    minhash_signatures,
    normalise_question,
)
from toucan.records import Task
from toucan.store import Store


def datasketch_signature(text: str) -> np.ndarray:
    minhash = MinHash(num_perm=BANDS * ROWS, seed=MINHASH_SEED, hashfunc=zlib.crc32)
    minhash.update_batch({word[:PREFIX] for word in text.encode().split()})
    return minhash.hashvalues


def varied_texts(count: int) -> list[str]:
    rng = random.Random(5)
    words = ["a", "ab", "abc", "abcd", "abcde", "abcdef", "weather", "weathers", "straße", "日本語",
             "ü", "x_1", "42", "naïve", "ééé", "\x00a", "zz\x00"]  # fmt: skip
    texts = ["", " ", "a", "a a a", "ab abc abcd abcde", "\tab\ncd\x0b ef\x0c\r", "é", "日本"]
    for _ in range(count):
        picked = rng.choices([*words, rng.choice(string.ascii_lowercase) * 5], k=rng.randint(0, 60))
        texts.append(" ".join(picked) if rng.random() < 0.8 else "  ".join(picked) + " ")
    return texts


def test_the_vectorised_minhash_equals_datasketch_value_for_value() -> None:
    texts = varied_texts(400)
    expected = np.array([datasketch_signature(text) for text in texts])
    assert (minhash_signatures(texts) == expected).all()
    repeated = texts * 11  # more texts than one batch of the vectorised pass
    assert (minhash_signatures(repeated) == np.tile(expected, (11, 1))).all()
    assert minhash_signatures([]).shape == (0, BANDS * ROWS)


def test_the_ascii_fast_path_of_normalise_question_equals_the_regex() -> None:
    rng = random.Random(3)
    alphabet = [chr(code) for code in range(128)]
    questions = ["", "?!", "Hello,  World_42!", "\tTabs\nand\x0bvtabs\x1c\x1fsep", "Straße İ ΣΑΣ"]
    questions += ["".join(rng.choices(alphabet, k=rng.randint(0, 80))) for _ in range(2000)]
    for question in questions:
        assert normalise_question(question) == " ".join(WORD.findall(question.lower()))


def test_the_ratio_of_word_sorted_texts_is_the_token_sort_ratio() -> None:
    rng = random.Random(4)
    questions = [text for text in varied_texts(150) if rng.random() < 0.5]
    questions += ["", "?", "b a", "a b", "Zebra, apple: éclair über Ärger zz", "zz über Ärger"]
    for first in questions:
        for second in questions:
            for cutoff in (0, 90):
                assert fuzz.ratio(
                    comparable_text(first), comparable_text(second), score_cutoff=cutoff
                ) == fuzz.token_sort_ratio(
                    normalise_question(first), normalise_question(second), score_cutoff=cutoff
                )


def test_colliding_pairs_are_every_pair_sharing_a_band_value() -> None:
    rng = np.random.default_rng(2)
    keys = rng.integers(0, 6, size=(300, 4))  # small values: many runs, some long
    expected = {
        (later, earlier)
        for earlier, later in combinations(range(len(keys)), 2)
        if (keys[earlier] == keys[later]).any()
    }
    pairs = colliding_pairs(keys[:, band] for band in range(keys.shape[1]))
    assert (np.diff(pairs) > 0).all()
    assert {(int(p >> 32), int(p & 0xFFFFFFFF)) for p in pairs} == expected


def test_select_items_reads_every_task_even_when_the_rowid_hint_is_stale(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.duckdb")
    store.insert(
        [
            Task(task_id=f"t{n}", strategy="single_server", question=f"Q {n}!", server_ids=["s"])
            for n in range(5)
        ]
    )
    pending = pending_ids(store)
    assert select_items(store, pending) == [DedupItem(f"t{n}", ("s",), f"{n} q") for n in range(5)]
    stale = pending.with_columns(pl.lit(0, dtype=pending["rowid"].dtype).alias("rowid"))
    assert [item.task_id for item in select_items(store, stale)] == [f"t{n}" for n in range(5)]


def test_staged_texts_read_back_by_position_across_read_spans(tmp_path: Path) -> None:
    texts = ["", "a", "b c", "straße", "", "x y z", "日本語"] * 3
    items = [DedupItem(f"t{n}", ("s",), text) for n, text in enumerate(texts)]
    staged = StagedTasks(tmp_path, pl.Series("task_id", [item.task_id for item in items]))
    try:
        staged.add(items[:10])
        staged.add(items[10:])
        positions = np.array([0, 1, 3, 4, 5, 6, 12, 20])
        for read_bytes in (1, 7, 1 << 22):
            assert staged.texts_at(positions, read_bytes) == [texts[p] for p in positions]
        assert staged.items(5, 9) == items[5:9]
    finally:
        staged.close()
