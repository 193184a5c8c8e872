"""The one runner's parts: what counts as unfinished (retryable vs final reasons), the
counters a summary is made from, and the two executors running the same fan-out."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import duckdb
import pytest
from prefect import flow

from flows.executors import AsyncioExecutor, FanOut, PrefectExecutor
from flows.queries import (
    pending_filter_tasks,
    pending_filter_trajectories,
    pending_trajectories,
    select_unrated_trajectories,
    unfinished_ids,
)
from flows.run_context import StageTally, Stream
from flows.trajectories import plan_work
from flows.writes import count_attempts
from tasks.filter_trajectories import make_rating_id
from tasks.trajectory_records import plan_items
from toucan.config import load_settings
from toucan.errors import RETRYABLE_REASONS, disposition
from toucan.records import Server, Task, TaskRating, Trajectory, TrajectoryRating
from toucan.store import Store


def rating(task_id: str, reason: str | None, attempts: int = 1) -> TaskRating:
    status = "error" if reason else "ok"
    return TaskRating(
        rating_id=f"r-{task_id}",
        task_id=task_id,
        judge="j",
        status=status,
        reason=reason,
        attempts=attempts,
    )


def test_a_retryable_error_is_unfinished_and_a_final_one_is_not(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.duckdb")
    store.insert([Task(task_id=t, strategy="single_server", question="q?") for t in "abcd"])
    store.insert([rating("a", "rate_limited"), rating("b", "unparseable_reply"), rating("c", None)])
    ids = ["r-a", "r-b", "r-c", "r-d"]
    assert unfinished_ids(store, TaskRating, ids, max_attempts=3) == {"r-a", "r-d"}
    assert pending_filter_tasks(store, load_settings(profile="local")) == 2


def test_an_item_tried_max_attempts_times_is_given_up_not_retried(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.duckdb")
    store.insert([Task(task_id=t, strategy="single_server", question="q?") for t in "abc"])
    store.insert(
        [
            rating("a", "model_server_error", attempts=2),
            rating("b", "model_server_error", attempts=3),
            rating("c", "budget_exhausted", attempts=5),
        ]
    )
    ids = ["r-a", "r-b", "r-c"]
    assert unfinished_ids(store, TaskRating, ids, max_attempts=3) == {"r-a"}
    assert unfinished_ids(store, TaskRating, ids, max_attempts=6) == set(ids)
    settings = load_settings(profile="local")
    assert settings.retries.max_attempts == 3
    assert pending_filter_tasks(store, settings) == 1


def test_a_replaced_row_counts_one_more_attempt_and_a_new_one_starts_at_one(
    tmp_path: Path,
) -> None:
    store = Store(tmp_path / "s.duckdb")
    store.insert([rating("a", "model_timeout", attempts=2)])
    numbered = count_attempts(store, [rating("a", None), rating("b", None)])
    assert [(r.rating_id, r.attempts) for r in numbered] == [("r-a", 3), ("r-b", 1)]
    store.upsert(numbered)
    again = count_attempts(store, [rating("a", None), rating("b", "rate_limited")])
    assert [r.attempts for r in again] == [4, 2]


def test_every_retryable_reason_is_one_table_and_unknown_reasons_are_final() -> None:
    for reason in ("model_server_error", "rate_limited", "model_timeout", "server_crashed"):
        assert disposition(reason) == "retryable"
    for reason in ("budget_exhausted", "model_unavailable", "batch_expired", "batch_lost"):
        assert reason in RETRYABLE_REASONS
    for reason in ("unparseable_reply", "score_out_of_range", "target_tool_not_found", None):
        assert disposition(reason) == "final"
    assert disposition("a_reason_nobody_wrote") == "final"


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


def test_a_store_from_before_attempts_gets_the_column_with_one_try_per_row(tmp_path: Path) -> None:
    path = tmp_path / "old.duckdb"
    Store(path).insert([rating("a", "rate_limited"), rating("b", None)])
    with duckdb.connect(str(path)) as con:  # the store as an older toucan left it
        con.execute("ALTER TABLE task_ratings DROP COLUMN attempts")
        con.execute("DELETE FROM schema_migrations WHERE description LIKE '%.attempts'")
    reopened = Store(path)
    reopened.ensure_schema()
    assert {(r.rating_id, r.attempts) for r in reopened.select(TaskRating)} == {
        ("r-a", 1),
        ("r-b", 1),
    }
    assert unfinished_ids(reopened, TaskRating, ["r-a", "r-b"], max_attempts=3) == {"r-a"}


def test_trajectories_and_their_judge_resume_by_the_same_rule(tmp_path: Path) -> None:
    """Retryable error rows are redone, final and given-up ones are not, whichever stage."""
    store = Store(tmp_path / "s.duckdb")
    settings = load_settings(profile="local")
    spec = {"name": "srv", "transport": "stdio", "command": "true"}
    server = Server(server_id="srv", name="srv", source="fleet", transport="stdio", status="ok",
                    spec=spec)  # fmt: skip
    tasks = [Task(task_id=f"t{i}", strategy="single_server", server_ids=["srv"]) for i in range(4)]
    kept = [TaskRating(rating_id=f"k{i}", task_id=f"t{i}", judge="j", keep=True) for i in range(4)]
    store.insert([server, *tasks, *kept])
    items = plan_items(tasks, ["Teacher"], ["function-calling"])
    outcomes = [("error", "server_paused", 1), ("error", "model_request_rejected", 1),
                ("error", "model_server_error", 3), ("ok", None, 1)]  # fmt: skip
    rows = [
        Trajectory(trajectory_id=item.trajectory_id, task_id=item.task.task_id, teacher="Teacher",
                   status=status, reason=reason, attempts=attempts)  # type: ignore[arg-type]
        for item, (status, reason, attempts) in zip(items, outcomes, strict=True)
    ]  # fmt: skip
    store.insert(rows)
    work = plan_work(store, settings, ["Teacher"], ["function-calling"], None)
    assert [i.trajectory_id for i in work.items] == [rows[0].trajectory_id]
    assert work.already_done == 3
    assert pending_trajectories(store, settings) == 1

    judged = [
        TrajectoryRating(rating_id=make_rating_id(row.trajectory_id, ["judge"]),
                         trajectory_id=row.trajectory_id, judge="judge", status=status,
                         reason=reason, attempts=attempts)  # type: ignore[arg-type]
        for row, (status, reason, attempts) in zip(rows, outcomes, strict=True)
    ]  # fmt: skip
    store.execute("UPDATE trajectories SET status = 'ok'")
    store.insert(judged)
    todo, already = select_unrated_trajectories(store, ["judge"], None, max_attempts=3)
    assert [i.trajectory.trajectory_id for i in todo] == [rows[0].trajectory_id]
    assert already == 3
    assert pending_filter_trajectories(store, settings) == 1


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


def streamed_fan_out(written: list[Any], made_when_written: list[int]) -> FanOut:
    """Twenty batches made on demand; each write notes how many had been made by then."""
    made: list[int] = []

    def make() -> Any:
        for index in range(20):
            made.append(index)
            yield [100 + index]  # 13 would fail the batch (`double`)

    def write(output: list[int]) -> None:
        made_when_written.append(len(made))
        written.append(output)

    return FanOut(
        stage="streaming",
        batch_fn=double,
        batches=Stream(20, make),
        parallel=2,
        kwargs_for=lambda batch: {"offset": 0},
        write=write,
        on_error=lambda batch, error: [-1],
    )


@flow(name="streaming-probe", persist_result=False)
def stream_on_prefect() -> tuple[list[Any], list[int]]:
    written: list[Any] = []
    made: list[int] = []
    PrefectExecutor().run(streamed_fan_out(written, made))
    return written, made


@pytest.mark.usefixtures("prefect_harness")
def test_both_executors_make_a_stream_of_batches_only_as_lanes_free_up() -> None:
    on_asyncio: tuple[list[Any], list[int]] = ([], [])
    asyncio.run(AsyncioExecutor().run(streamed_fan_out(*on_asyncio)))
    for written, made_when_written in (on_asyncio, stream_on_prefect()):
        assert sorted(written) == [[200 + 2 * index] for index in range(20)]
        # the batches running (2) and the one a lane took next, never the whole stream
        assert made_when_written[0] <= 3
        assert all(made <= written + 3 for written, made in enumerate(made_when_written))
