"""How stage 4 splits its work: batches per server group, and never more items in flight
than `trajectories.concurrency`, however many groups there are."""

from __future__ import annotations

from pathlib import Path

import pytest

from flows.trajectories import plan_work
from tests.trajectories.helpers import fake_settings, kept_task, seed_store, server_row, tiny_spec
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
