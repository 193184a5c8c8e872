"""The one runner's parts: what counts as unfinished (retryable vs final reasons), the
counters a summary is made from, and the two executors running the same fan-out."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from prefect import flow

from flows.executors import AsyncioExecutor, FanOut, PrefectExecutor
from flows.queries import pending_filter_tasks, unfinished_ids
from flows.run_context import StageTally
from toucan.config import load_settings
from toucan.records import Task, TaskRating
from toucan.store import Store


def rating(task_id: str, reason: str | None) -> TaskRating:
    status = "error" if reason else "ok"
    return TaskRating(
        rating_id=f"r-{task_id}", task_id=task_id, judge="j", status=status, reason=reason
    )


def test_a_retryable_error_is_unfinished_and_a_final_one_is_not(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.duckdb")
    store.insert([Task(task_id=t, strategy="single_server", question="q?") for t in "abcd"])
    store.insert([rating("a", "rate_limited"), rating("b", "unparseable_reply"), rating("c", None)])
    ids = ["r-a", "r-b", "r-c", "r-d"]
    assert unfinished_ids(store, TaskRating, ids) == {"r-a", "r-d"}
    assert pending_filter_tasks(store, load_settings(profile="local")) == 2


def test_the_tally_counts_items_tables_and_means() -> None:
    tally = StageTally()
    tally.item("ok")
    tally.item("error", "model_timeout")
    tally.add_cells("teacher", "t1", {"done": 1, "cost_usd": 0.5})
    tally.add_cells("teacher", "t1", {"done": 1, "cost_usd": 0.25})
    for score in (3, 4):
        tally.sample("scores", "quality", score)
    assert (tally.finished, tally.failed) == (2, 1)
    assert tally.counts("status") == {"ok": 1, "error": 1}
    assert tally.counts("reason") == {"model_timeout": 1}
    assert tally.table("teacher") == {"t1": {"done": 2, "cost_usd": 0.75}}
    assert tally.means("scores", ("quality", "absent")) == {"quality": 3.5}


def double(batch: list[int], offset: int) -> list[int]:
    """A batch function: plain, sync, importable (a Prefect task runs it on a thread)."""
    if 13 in batch:
        raise ValueError("unlucky batch")
    return [item * 2 + offset for item in batch]


def fan_out(written: list[list[int]]) -> FanOut:
    return FanOut(
        stage="doubling",
        batch_fn=double,
        batches=[[1, 2], [3], [13], [4, 5]],
        parallel=2,
        kwargs_for=lambda batch: {"offset": len(batch)},
        write=written.append,
        on_error=lambda batch, error: [-len(batch)],
    )


@flow(name="executor-probe", persist_result=False)
def run_on_prefect() -> list[list[int]]:
    written: list[list[int]] = []
    PrefectExecutor().run(fan_out(written))
    return written


@pytest.mark.usefixtures("prefect_harness")
def test_both_executors_write_every_batch_once_and_hand_a_failed_one_to_the_stage() -> None:
    expected = [[4, 6], [7], [-1], [10, 12]]
    on_asyncio: list[Any] = []
    asyncio.run(AsyncioExecutor().run(fan_out(on_asyncio)))
    assert sorted(on_asyncio) == sorted(expected)
    assert sorted(run_on_prefect()) == sorted(expected)


def stopping_fan_out(written: list[Any], skipped: list[Any]) -> FanOut:
    """One batch at a time; the guards trip once two batches have started."""
    started: list[Any] = []

    def start(batch: list[int]) -> dict[str, Any]:
        started.append(batch)
        return {"offset": len(batch)}

    stopping = fan_out(written)
    stopping.parallel = 1
    stopping.kwargs_for = start
    stopping.stopped = lambda: len(started) >= 2
    stopping.skip = skipped.append
    return stopping


@flow(name="stopping-probe", persist_result=False)
def stop_on_prefect() -> tuple[list[Any], list[Any]]:
    written: list[Any] = []
    skipped: list[Any] = []
    PrefectExecutor().run(stopping_fan_out(written, skipped))
    return written, skipped


@pytest.mark.usefixtures("prefect_harness")
def test_once_the_guards_trip_no_batch_starts_and_each_left_is_handed_to_skip() -> None:
    on_asyncio: tuple[list[Any], list[Any]] = ([], [])
    asyncio.run(AsyncioExecutor().run(stopping_fan_out(*on_asyncio)))
    for written, skipped in (on_asyncio, stop_on_prefect()):
        assert written == [[4, 6], [7]]  # the batches started before the trip finish
        assert skipped == [[13], [4, 5]]
