"""What the extension flows start from: kept tasks and kept trajectories in the store."""

from __future__ import annotations

from toucan.records import Task, Trajectory
from toucan.store import Store

KEPT_TASK_IDS = "SELECT task_id FROM task_ratings WHERE keep AND status = 'ok'"
KEPT_TRAJECTORY_IDS = """
    SELECT trajectory_id FROM (
        SELECT trajectory_id, keep, row_number() OVER (
            PARTITION BY trajectory_id ORDER BY created_at DESC, rating_id) AS rn
        FROM trajectory_ratings WHERE status = 'ok')
    WHERE rn = 1 AND keep"""


def select_kept_original_tasks(store: Store) -> list[Task]:
    """Original tasks the task judge kept, in id order (extensions derive from these)."""
    return store.select(
        Task,
        f"status = 'ok' AND kind = 'original' AND task_id IN ({KEPT_TASK_IDS}) ORDER BY task_id",
    )


def select_kept_trajectories(
    store: Store, kinds: tuple[str, ...] = ("original",)
) -> list[Trajectory]:
    """Trajectories whose latest rating kept them, of the given kinds, in id order."""
    marks = ", ".join("?" for _ in kinds)
    return store.select(
        Trajectory,
        f"status = 'ok' AND kind IN ({marks}) AND trajectory_id IN ({KEPT_TRAJECTORY_IDS}) "
        "ORDER BY trajectory_id",
        list(kinds),
    )
