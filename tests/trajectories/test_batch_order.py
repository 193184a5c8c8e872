"""Issue 15, fault 6: with more server groups than batches running at once, every server is
called in the run's first waves (a scout chunk per group, scouts first), so a server that
hangs costs its timeout beside the healthy work, not after it."""

from __future__ import annotations

from tasks.trajectory_records import TrajectoryItem, group_into_batches
from toucan.records import Task


def items_of(servers: int, per_server: int) -> list[TrajectoryItem]:
    return [
        TrajectoryItem(
            trajectory_id=f"t-{s}-{n}",
            task=Task(
                task_id=f"task-{s}-{n}",
                strategy="single_server",
                question=f"q{n}",
                server_ids=[f"srv-{s:02d}"],
            ),
            teacher="teacher",
            style="react",
        )
        for s in range(servers)
        for n in range(per_server)
    ]


def test_more_groups_than_lanes_put_one_scout_per_server_first() -> None:
    items = items_of(servers=10, per_server=32)
    batches = group_into_batches(items, 32, lanes=8, scout_size=4)
    scouts = batches[:10]
    assert [b.server_ids for b in scouts] == [[f"srv-{s:02d}"] for s in range(10)]
    assert all(len(b) == 4 for b in scouts)
    assert [len(b) for b in batches[10:]] == [28] * 10  # the rest of each group, one batch
    assert sorted(i.trajectory_id for b in batches for i in b.items) == sorted(
        i.trajectory_id for i in items
    )


def test_no_more_groups_than_lanes_keeps_whole_chunks() -> None:
    items = items_of(servers=3, per_server=70)
    batches = group_into_batches(items, 32, lanes=8, scout_size=4)
    assert [len(b) for b in batches] == [32, 32, 32, 32, 6, 32, 6, 32, 6]
    assert [b.server_ids[0] for b in batches[:3]] == ["srv-00", "srv-01", "srv-02"]


def test_a_group_smaller_than_a_scout_is_one_batch() -> None:
    batches = group_into_batches(items_of(servers=9, per_server=2), 32, lanes=8, scout_size=4)
    assert [len(b) for b in batches] == [2] * 9
