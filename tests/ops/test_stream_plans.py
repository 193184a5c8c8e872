"""The stages plan in flat memory (issue 14): synthesize's plan, filter-tasks' selection, the
trajectories plan and the plans of irrelevance, diversify and multi-turn are streamed from the
store a chunk at a time as batches start, so the memory held while a plan is made and handed
out does not grow with its item count.

Each test builds the stage's real plan (`job.plan`, as the runner does) over a real DuckDB
store for a small and a large item count, consumes every batch the way an executor does (one
at a time, dropping each), and bounds the growth of the tracemalloc peak between the two.
Holding the whole plan costs ~1-2 KB per slot and ~4 KB per task: tens of MB here.
"""

from __future__ import annotations

import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from flows.estimate_stages import job_plan
from tasks.diversify import MODES
from tests.bulk_store import fill_task_ratings, fill_tasks, fill_trajectories
from tests.synthesize.seed import fake_settings, seed_servers, write_config
from tests.trajectories.helpers import server_row, tiny_spec
from toucan.records import Trajectory, TrajectoryRating
from toucan.store import Store

SMALL = 2_500  # items, more than a chunk of the stream (flows/queries.py CHUNK_ITEMS)
LARGE_PLAN = 16_000  # slots: a whole plan held is ~1.3 KB per slot, ~18 MB more
LARGE_SELECTION = 8_000  # tasks: a whole selection held is ~6 KB per task, ~30 MB more
# teacher tasks (one item each): a whole trajectories plan held is ~6 KB per item, ~24 MB more;
# streamed, a task id per task, a byte per item and one id check's chunk (~2 MB more)
TRAJECTORY_TASKS = (1_000, 5_000)
# kept rows multi-turn makes a conversation of: half two-tool tasks to split, half kept
# trajectories to extend. A whole plan held is every original task twice and the kept
# trajectories (~12 KB per row: 2.5k -> 8k rows, +65 MB); streamed, an id per conversation
# and one id check's chunk (+1.7 MB). Fewer rows than that: the test makes every batch
MULTI_TURN_ROWS = (600, 3_000)
MB_ALLOWED = 4.0  # growth of the peak from SMALL to large: a chunk of items, not all of them


def peak_mb_of_plan(stage: str, store: Store, config: Path, **params: Any) -> tuple[float, int]:
    """(tracemalloc peak in MB while the stage plans and every batch is made, items made)."""
    settings = fake_settings(config)
    made = 0
    with store.holding():
        tracemalloc.start()
        try:
            _, plan = job_plan(stage, store, settings, params)
            for batch in plan.batches:
                made += len(batch)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert made == plan.planned
    return peak / 2**20, made


def test_the_synthesize_plan_holds_the_same_memory_for_more_slots(tmp_path: Path) -> None:
    config = write_config(tmp_path / "toucan.yaml", "http://127.0.0.1:9")  # never called
    store = Store(tmp_path / "s.duckdb")
    seed_servers(store)
    small, made_small = peak_mb_of_plan("synthesize", store, config, limit=SMALL, seed=1)
    large, made_large = peak_mb_of_plan("synthesize", store, config, limit=LARGE_PLAN, seed=1)
    print(f"synthesize plan peak: {small:.1f} MB for {SMALL}, {large:.1f} MB for {LARGE_PLAN}")
    assert (made_small, made_large) == (SMALL, LARGE_PLAN)
    assert large - small <= MB_ALLOWED, (small, large)


# the stages that select over tasks: items planned per task, and whether the tasks are kept
# first (irrelevance and diversify derive from kept tasks; filter-tasks rates unrated ones).
# Held whole, a selection was a Task per task (~6 KB each, ~30-45 MB more at LARGE_SELECTION).
TASK_SELECTIONS = {"filter_tasks": (1, False), "irrelevance": (1, True), "diversify": (2, True)}


@pytest.mark.parametrize("stage", list(TASK_SELECTIONS))
def test_the_selections_over_tasks_hold_the_same_memory_for_more_tasks(
    tmp_path: Path, stage: str
) -> None:
    per_task, kept = TASK_SELECTIONS[stage]
    assert stage != "diversify" or per_task == len(MODES)
    config = write_config(tmp_path / "toucan.yaml", "http://127.0.0.1:9")
    peaks = []
    for count in (SMALL, LARGE_SELECTION):
        store = Store(tmp_path / f"{count}.duckdb")
        servers = [server.server_id for server in seed_servers(store)]
        assert fill_tasks(store, count, servers) == count
        if kept:
            assert fill_tasks(store, 50, servers, tag="unrated") == 50  # not kept: not planned
            assert fill_task_ratings(store) == count
        peak, made = peak_mb_of_plan(stage, store, config)
        assert made == count * per_task
        peaks.append(peak)
    print(
        f"{stage} plan peak: {peaks[0]:.1f} MB for {SMALL}, {peaks[1]:.1f} MB for {LARGE_SELECTION}"
    )
    assert peaks[1] - peaks[0] <= MB_ALLOWED, peaks


def fill_teacher_tasks(store: Store, count: int, server_ids: list[str]) -> int:
    """`count` kept tasks, each a teacher task (one trajectories item); returns the items."""
    assert fill_tasks(store, count, server_ids) == count
    assert fill_task_ratings(store) == count
    return count


def fill_kept_rows_to_converse(store: Store, count: int, server_ids: list[str]) -> int:
    """Half of `count` kept two-tool tasks (each split), half kept one-tool tasks with a kept
    function-calling trajectory each (each extended); returns the multi-turn items."""
    half = count // 2
    for tag in ("split", "extend"):
        assert fill_tasks(store, half, server_ids, tag=tag) == half
        assert fill_task_ratings(store, tag=tag) == half
    store.execute(
        "UPDATE tasks SET target_tools = json_array(target_tools->0, target_tools->0) "
        "WHERE task_id LIKE 'task_split_%'"
    )
    template = Trajectory(
        trajectory_id="traj_template",
        task_id="task_template",
        teacher="Teacher",
        model="openai/Teacher",
        messages=[
            {"role": "user", "content": "QUESTION"},
            {"role": "assistant", "content": "Done: 2."},
        ],
        turns=1,
    )
    rating = TrajectoryRating(
        rating_id="jrate_template", trajectory_id="traj_template", judge="Judge", keep=True
    )
    assert fill_trajectories(store, template, rating, tag="extend") == half
    return 2 * half


# the agent stages, whose plans batch by server group: (kept rows, how to fill them, params)
AGENT_PLANS = {
    "trajectories": (TRAJECTORY_TASKS, fill_teacher_tasks, {"styles": ["function-calling"]}),
    "multi_turn": (MULTI_TURN_ROWS, fill_kept_rows_to_converse, {"follow_ups": 1}),
}


@pytest.mark.parametrize("stage", list(AGENT_PLANS))
def test_the_agent_plans_hold_the_same_memory_for_more_kept_rows(
    tmp_path: Path, stage: str
) -> None:
    counts, fill, params = AGENT_PLANS[stage]
    config = write_config(tmp_path / "toucan.yaml", "http://127.0.0.1:9")
    peaks = []
    for count in counts:
        store = Store(tmp_path / f"{count}.duckdb")
        # more server groups than batches at once (16): each group's scout goes first
        rows = [server_row(tiny_spec(tmp_path / f"{n}.log", name=f"tiny-{n}")) for n in range(20)]
        store.upsert(rows)
        items = fill(store, count, [row.server_id for row in rows])
        peak, made = peak_mb_of_plan(stage, store, config, **params)
        assert made == items
        peaks.append(peak)
    small, large = counts
    print(f"{stage} plan peak: {peaks[0]:.1f} MB for {small}, {peaks[1]:.1f} MB for {large}")
    assert peaks[1] - peaks[0] <= MB_ALLOWED, peaks
