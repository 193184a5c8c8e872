"""The store-backed near-duplicate pass (flows.dedup) on a real DuckDB file: incremental runs,
chunking, old stores, a changed threshold, and questions that normalise to nothing."""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from rapidfuzz import fuzz

from flows.dedup import dedup_pending_tasks
from tasks.dedup import find_near_duplicates, normalise_question
from toucan.config import load_settings
from toucan.errors import ConfigError
from toucan.records import DedupIndexEntry, Run, Task
from toucan.store import Store

SYLLABLES = (
    "ka",
    "lo",
    "mi",
    "nu",
    "pe",
    "ra",
    "si",
    "to",
    "vu",
    "we",
    "xa",
    "yo",
    "ze",
    "bri",
    "cla",
    "dro",
)
WORDS = [a + b for a in SYLLABLES for b in SYLLABLES]
BLOCKS = (("s1",), ("s2",), ("s1", "s2"))
START = datetime(2026, 1, 1)


def edited(rng: random.Random, words: list[str]) -> list[str]:
    """A near-duplicate: a few substituted, inserted or deleted words, or a plural s."""
    out = list(words)
    for _ in range(rng.randint(0, max(1, len(out) // 6))):
        at = rng.randrange(len(out))
        edit = rng.randrange(4)
        if edit == 0:
            out[at] = rng.choice(WORDS)
        elif edit == 1:
            out.insert(at, rng.choice(WORDS))
        elif edit == 2 and len(out) > 3:
            del out[at]
        else:
            out[at] += "s"
    return out


def corpus(count: int, seed: int = 7) -> list[tuple[tuple[str, ...], str]]:
    """(block, question) in plan order; about a third rewrite an earlier question of their
    block, so ratios fall on both sides of 90 and duplicates chain."""
    rng = random.Random(seed)
    written: dict[tuple[str, ...], list[list[str]]] = {block: [] for block in BLOCKS}
    rows = []
    for _ in range(count):
        block = rng.choice(BLOCKS)
        earlier = written[block]
        if earlier and rng.random() < 0.35:
            words = edited(rng, rng.choice(earlier))
        else:
            words = rng.choices(WORDS, k=rng.randint(4, 40))
        earlier.append(words)
        rows.append((block, " ".join(words).capitalize() + "?"))
    return rows


def add_run(store: Store, rows: list[tuple[tuple[str, ...], str]], first: int, day: int) -> None:
    """Rows [first:] of a corpus slice as the ok tasks of one synthesize run."""
    run_id = f"run-{day}"
    store.insert([Run(run_id=run_id, stage="synthesize", started_at=START + timedelta(day))])
    store.insert(
        [
            Task(
                task_id=f"task-{first + offset:04d}",
                strategy="single_server" if len(block) == 1 else "multi_server",
                question=question,
                server_ids=list(block),
                metadata={"slot": first + offset},
                run_id=run_id,
            )
            for offset, (block, question) in enumerate(rows)
        ]
    )


def all_pairs(tasks: list[Task], threshold: float) -> dict[str, str]:
    """The reference: each task against every earlier kept task of its block, in order."""
    kept: list[Task] = []
    dropped: dict[str, str] = {}
    for task in tasks:
        match = next(
            (
                k
                for k in kept
                if sorted(k.server_ids) == sorted(task.server_ids)
                and fuzz.token_sort_ratio(
                    normalise_question(task.question), normalise_question(k.question)
                )
                >= threshold * 100
            ),
            None,
        )
        if match is None:
            kept.append(task)
        else:
            dropped[task.task_id] = match.task_id
    return dropped


def in_plan_order(store: Store, where: str = "TRUE") -> list[Task]:
    return sorted(store.select(Task, where), key=lambda t: t.metadata["slot"])


def test_an_incremental_run_finds_the_same_duplicates_as_a_from_scratch_run(
    tmp_path: Path,
) -> None:
    rows = corpus(600)
    scratch = Store(tmp_path / "scratch.duckdb")
    add_run(scratch, rows[:400], 0, day=1)
    add_run(scratch, rows[400:], 400, day=2)
    reference = all_pairs(in_plan_order(scratch), 0.9)
    from_scratch = dedup_pending_tasks(scratch, 0.9, chunk=64)  # ten chunks
    incremental = Store(tmp_path / "incremental.duckdb")
    add_run(incremental, rows[:400], 0, day=1)
    first = dedup_pending_tasks(incremental, 0.9)
    add_run(incremental, rows[400:], 400, day=2)
    second = dedup_pending_tasks(incremental, 0.9)
    assert len(reference) > 100
    assert any(int(kept[5:]) < 400 for dropped, kept in second.items())  # across runs
    assert from_scratch == first | second == reference
    for store in (scratch, incremental):
        dropped = {t.task_id: t for t in store.select(Task, "reason = 'near_duplicate'")}
        assert {i: t.metadata["duplicate_of"] for i, t in dropped.items()} == reference
        assert all(t.status == "rejected" for t in dropped.values())
        assert (
            store.count(DedupIndexEntry)
            == store.count(Task, "status = 'ok'")
            == 600 - len(reference)
        )
    assert dedup_pending_tasks(incremental, 0.9) == {}


def test_the_in_memory_pass_matches_the_reference_on_chained_duplicates() -> None:
    tasks = [
        Task(task_id=f"t{index:04d}", strategy="single_server", question=q, server_ids=list(b))
        for index, (b, q) in enumerate(corpus(300, seed=3))
    ]
    reference = all_pairs(tasks, 0.9)
    assert len(reference) > 50
    assert find_near_duplicates(tasks, 0.9) == reference


def test_an_old_store_without_the_index_is_indexed_on_first_use(tmp_path: Path) -> None:
    rows = corpus(120)
    store = Store(tmp_path / "old.duckdb")
    add_run(store, rows, 0, day=1)
    store.execute("DROP TABLE dedup_index")  # as a store written before the index existed
    dropped = dedup_pending_tasks(Store(tmp_path / "old.duckdb"), 0.9)
    assert dropped == all_pairs(in_plan_order(store), 0.9)
    assert store.count(DedupIndexEntry) == 120 - len(dropped)


def test_a_changed_threshold_decides_every_ok_task_again(tmp_path: Path) -> None:
    store = Store(tmp_path / "t.duckdb")
    add_run(store, corpus(300), 0, day=1)
    at_90 = dedup_pending_tasks(store, 0.9)
    survivors = in_plan_order(store, "status = 'ok'")
    at_80 = dedup_pending_tasks(store, 0.8)
    assert at_80 == all_pairs(survivors, 0.8) and len(at_80) > 0
    assert not at_80.keys() & at_90.keys()
    schemes = {row[0] for row in store.query("SELECT DISTINCT scheme FROM dedup_index")}
    assert len(schemes) == 1 and schemes.pop().endswith("t0.8")


def test_a_task_no_longer_ok_is_not_a_kept_original(tmp_path: Path) -> None:
    store = Store(tmp_path / "t.duckdb")
    question = "Plan my week with the calendar and the weather for Lisbon"
    add_run(store, [(("s1",), question)], 0, day=1)
    assert dedup_pending_tasks(store, 0.9) == {}
    store.execute("UPDATE tasks SET status = 'rejected', reason = 'low_question_quality'")
    add_run(store, [(("s1",), question)], 1, day=2)
    assert dedup_pending_tasks(store, 0.9) == {}
    assert store.count(Task, "status = 'ok'") == 1


def test_questions_that_normalise_to_nothing_are_compared_like_any_other(
    tmp_path: Path,
) -> None:
    store = Store(tmp_path / "t.duckdb")
    rows = [(("s1",), "?!"), (("s1",), ""), (("s2",), "..."), (("s1",), "Weather in Lisbon?")]
    add_run(store, rows, 0, day=1)
    assert dedup_pending_tasks(store, 0.9) == {"task-0001": "task-0000"}


def test_a_threshold_outside_zero_to_one_fails_at_load() -> None:
    for threshold in (0, 90, -0.5):
        with pytest.raises(ConfigError):
            load_settings(overrides={"synthesize": {"dedup_threshold": threshold}})
    assert load_settings(overrides={"synthesize": {"dedup_threshold": 1}}).synthesize


def test_a_run_whose_every_new_task_is_a_duplicate_adds_no_index_row(tmp_path: Path) -> None:
    store = Store(tmp_path / "t.duckdb")
    question = "Plan my week with the calendar and the weather for Lisbon"
    add_run(store, [(("s1",), question)], 0, day=1)
    assert dedup_pending_tasks(store, 0.9) == {}
    add_run(store, [(("s1",), question + "!"), (("s1",), question.lower())], 1, day=2)
    assert dedup_pending_tasks(store, 0.9) == {"task-0001": "task-0000", "task-0002": "task-0000"}
    assert [row.task_id for row in store.select(DedupIndexEntry)] == ["task-0000"]
