"""How stage 4 splits its work: batches per server group, and never more items in flight
than `trajectories.concurrency`, however many groups there are."""

from __future__ import annotations

from pathlib import Path

import pytest

from flows.trajectories import MIN_BATCH_ITEMS, plan_work
from tasks.trajectory_records import group_into_batches, plan_items
from tests.trajectories.helpers import fake_settings, kept_task, seed_store, server_row, tiny_spec
from toucan.records import Trajectory
from toucan.store import Store


@pytest.mark.parametrize(
    ("concurrency", "parallel", "per_batch"), [(1, 1, 1), (2, 2, 1), (12, 3, 4), (64, 3, 21)]
)
def test_batches_in_flight_never_hold_more_than_the_configured_concurrency(
    tmp_path: Path, concurrency: int, parallel: int, per_batch: int
) -> None:
    servers = [server_row(tiny_spec(tmp_path / f"{n}.log", name=f"tiny-{n}")) for n in range(3)]
    tasks = [
        kept_task(f"question {n} on {s.name}", [s], [(s, "echo")])
        for s in servers
        for n in range(2)
    ]
    store = Store(tmp_path / "s.duckdb")
    seed_store(store, servers, tasks)
    settings = fake_settings(
        "http://127.0.0.1:9", store.path, trajectories={"concurrency": concurrency}
    )
    plan = plan_work(store, settings, ["Teacher-A"], ["function-calling"], None)
    # every batch holds one server group; a group may be split to scout it (test_batch_order)
    assert all(len(b.server_ids) == 1 for b in plan.batches)
    assert len({tuple(b.server_ids) for b in plan.batches}) == 3
    assert sorted(i.trajectory_id for b in plan.batches for i in b.items) == sorted(
        i.trajectory_id for i in plan.items
    )
    assert (plan.parallel_batches, plan.per_batch_concurrency) == (parallel, per_batch)
    assert plan.parallel_batches * plan.per_batch_concurrency <= concurrency


def test_the_streamed_plan_makes_the_batches_of_the_whole_item_list(tmp_path: Path) -> None:
    """The plan reads a batch's tasks as it is made; its batches are exactly those of
    `group_into_batches` over every unfinished item (ids, items, order, scouts), after a
    limit and with finished rows left out; a task on a server that is not ok is not run."""
    servers = [server_row(tiny_spec(tmp_path / f"{n}.log", name=f"tiny-{n}")) for n in range(3)]
    pair = kept_task("on two servers", servers[:2], [(servers[0], "echo")])
    tasks = [
        kept_task(f"question {n} on {s.name}", [s], [(s, "echo")])
        for s in servers
        for n in range(5)
    ]
    gone = server_row(tiny_spec(tmp_path / "gone.log", name="gone")).model_copy(
        update={"status": "error"}
    )
    orphan = kept_task("on a broken server", [gone], [(gone, "echo")])
    store = Store(tmp_path / "s.duckdb")
    seed_store(store, [*servers, gone], [*tasks, pair, orphan])
    teachers, styles = ["Teacher-A", "Teacher-B"], ["function-calling", "react"]
    usable = [t for t, _ in [*tasks, pair]]
    every = plan_items(usable, teachers, styles)
    done = every[3]
    store.insert([Trajectory(trajectory_id=done.trajectory_id, task_id=done.task.task_id,
                             teacher=done.teacher, style=done.style)])  # fmt: skip
    todo = [i for i in every if i.trajectory_id != done.trajectory_id][:50]
    # 4 groups on 2 lanes: each group's scout (one item) goes first
    settings = fake_settings(
        "http://127.0.0.1:9", store.path, teachers=tuple(teachers), trajectories={"concurrency": 2}
    )
    plan = plan_work(store, settings, teachers, styles, 50)
    expected = group_into_batches(todo, MIN_BATCH_ITEMS, lanes=2, scout_size=1)
    assert [b.model_dump() for b in plan.batches] == [b.model_dump() for b in expected]
    assert [len(b) for b in expected][:4] == [1, 1, 1, 1]
    assert (len(plan.items), plan.already_done, len(plan.batches)) == (50, 1, len(expected))
    assert plan.largest_batch == max(len(b) for b in expected)
