"""What an export reads from the store, a chunk at a time: the kept rows, cut into id
chunks; each chunk's sources (trajectory, task, ratings, servers); the content key, hashed as
its rows are read. Nothing here holds all the kept rows (issue 14)."""

from __future__ import annotations

import hashlib
from typing import Any

from flows.queries import KEPT_TRAJECTORY_RATING_IDS, kept_trajectory_ratings, latest_task_ratings
from tasks.export import ExportRejected, ExportSource, parse_trajectory_cells
from toucan.config import Settings
from toucan.ids import ID_HEX_CHARS, canonical_json
from toucan.records import Server, Task, TaskRating, Trajectory, TrajectoryRating
from toucan.store import Store, among

KEY_CHUNK = 10_000  # rows of the content key read at a time
# one chunk of the plan: its first and last id ($1, $2)
IN_CHUNK = "trajectory_id BETWEEN $1 AND $2"
# the tasks among the given ids ($1)
AMONG_IDS = among("task_id", "$1")


def kept_rows(within: str = "true", *, with_task: bool = True) -> str:
    """SQL condition on `trajectories`: the kept, exportable rows (ok, kept by their newest
    rating, their task in the store; without `with_task`, the kept rows whose task is not)
    among those matching `within`, a condition on `trajectory_id` that also restricts the
    ratings ranked (`kept_trajectory_ratings`)."""
    return (
        f"status = 'ok' AND ({within}) AND trajectory_id IN "
        f"({kept_trajectory_ratings('trajectory_id', within)}) "
        f"AND task_id {'IN' if with_task else 'NOT IN'} (SELECT task_id FROM tasks)"
    )


KEPT_ROWS = kept_rows()
KEPT_WITHOUT_TASK = kept_rows(with_task=False)
# a chunk's kept rows ($1, $2) and the ratings keeping them: only the chunk's rows and their
# ratings are ranked (ranking the whole table per chunk made the export quadratic); the full
# rating rows are then read by id (their key's index), not by a scan of the table
CHUNK_ROWS = f"SELECT * FROM trajectories WHERE {kept_rows(IN_CHUNK)} ORDER BY trajectory_id"
CHUNK_RATINGS = f"rating_id IN ({kept_trajectory_ratings('rating_id', IN_CHUNK)})"
# the assessments of the given tasks ($1): only those tasks' ratings are ranked (still found
# by a scan of the table's task ids: task_ratings has no index on task_id)
TASKS_LATEST_RATINGS = f"rating_id IN ({latest_task_ratings(AMONG_IDS)})"


def has_trajectories(store: Store) -> bool:
    return store.path.exists() and bool(store.count(Trajectory))


def plan_chunks(store: Store, size: int) -> list[tuple[str, str]]:
    """The kept rows (`KEPT_ROWS`) in id order, cut into chunks of `size`: (first id, last
    id) of each, so the plan holds two ids per chunk, not the rows."""
    if not has_trajectories(store):
        return []
    rows = store.query(
        f"SELECT min(trajectory_id), max(trajectory_id) FROM (SELECT trajectory_id, "
        f"(row_number() OVER (ORDER BY trajectory_id) - 1) // {int(size)} AS chunk "
        f"FROM trajectories WHERE {KEPT_ROWS}) GROUP BY chunk ORDER BY chunk"
    )
    return [(first, last) for first, last in rows]


def count_kept_rows(store: Store) -> tuple[int, list[str], dict[str, str]]:
    """(kept rows to export; the judges whose ratings keep them; the kept rows whose task is
    not in the store: trajectory id -> `task_missing`)."""
    if not has_trajectories(store):
        return 0, [], {}
    kept = store.query(f"SELECT count(*) FROM trajectories WHERE {KEPT_ROWS}")[0][0]
    judges = store.query(
        f"SELECT DISTINCT judge FROM trajectory_ratings WHERE rating_id IN "
        f"({KEPT_TRAJECTORY_RATING_IDS}) AND trajectory_id IN (SELECT trajectory_id "
        f"FROM trajectories WHERE {KEPT_ROWS}) ORDER BY judge"
    )
    without_task = store.query(f"SELECT trajectory_id FROM trajectories WHERE {KEPT_WITHOUT_TASK}")
    return int(kept), [j for (j,) in judges], {t: "task_missing" for (t,) in without_task}


def select_tasks(store: Store, task_ids: set[str]) -> dict[str, Task]:
    """task id -> task, for those of `task_ids` in the store."""
    if not task_ids:
        return {}
    return {t.task_id: t for t in store.select(Task, AMONG_IDS, [sorted(task_ids)])}


def load_export_sources(
    store: Store, chunk: tuple[str, str], servers: dict[str, Server]
) -> tuple[list[ExportSource], dict[str, str]]:
    """The sources of one chunk's kept rows (with their task, the ratings and the servers),
    and the rows that cannot be read (trajectory id -> reason)."""
    ratings = {r.trajectory_id: r for r in store.select(TrajectoryRating, CHUNK_RATINGS, chunk)}
    frame = store.frame(CHUNK_ROWS, chunk)
    tasks = select_tasks(store, set(frame["task_id"].to_list()) if len(frame) else set())
    tasks |= select_tasks(store, {t.parent_id for t in tasks.values() if t.parent_id} - set(tasks))
    task_ratings = {
        r.task_id: r for r in store.select(TaskRating, TASKS_LATEST_RATINGS, [sorted(tasks)])
    }
    sources: list[ExportSource] = []
    unreadable: dict[str, str] = {}
    for cells in frame.iter_rows(named=True):
        try:
            trajectory = parse_trajectory_cells(cells)
        except ExportRejected as exc:
            unreadable[cells["trajectory_id"]] = exc.reason
            continue
        task = tasks[trajectory.task_id]
        # an irrelevant task keeps its question, so the original's assessment is the one
        # that describes it; other kinds are judged themselves (falling back to the parent)
        own, parent = task_ratings.get(task.task_id), task_ratings.get(task.parent_id or "")
        task_rating = (parent or own) if task.kind == "irrelevant" else (own or parent)
        sources.append(
            ExportSource(
                trajectory=trajectory,
                task=task,
                task_rating=task_rating,
                trajectory_rating=ratings[trajectory.trajectory_id],
                servers=[servers[s] for s in task_server_ids(task, trajectory) if s in servers],
            )
        )
    return sources, unreadable


def task_server_ids(task: Task, trajectory: Any) -> list[str]:
    """The servers whose tools the agent had: from the name map, else the task's servers."""
    from_map = [v.get("server_id") for v in trajectory.tool_name_map.values()]
    ordered = dict.fromkeys(s for s in from_map if s)
    return list(ordered) or list(task.server_ids)


def export_content_key(
    store: Store, formats: list[str], mix: str, seed: int, settings: Settings
) -> str:
    """What an export's files are made from: each kept row and the rating keeping it (a
    replaced row or a re-rating changes the key), the formats, the mix and its settings.
    `make_id("export", rows, ...)` over the rows sorted, its text hashed as it is read (in
    chunks of KEY_CHUNK) rather than built whole."""
    sql = (
        "SELECT trajectory_id, finished_at, rating_id, created_at "
        f"FROM (SELECT trajectory_id, finished_at FROM trajectories WHERE {KEPT_ROWS}) "
        "JOIN (SELECT trajectory_id, rating_id, created_at FROM trajectory_ratings "
        f"WHERE rating_id IN ({KEPT_TRAJECTORY_RATING_IDS})) USING (trajectory_id) "
        "ORDER BY trajectory_id"
    )
    digest = hashlib.sha256(b'["export",[')
    if has_trajectories(store):
        with store.connect(read_only=True) as con:
            cursor = con.execute(sql)
            first = True
            while chunk := cursor.fetchmany(KEY_CHUNK):
                for trajectory_id, finished_at, rating_id, created_at in chunk:
                    row = [
                        trajectory_id,
                        finished_at.isoformat(),
                        rating_id,
                        created_at.isoformat(),
                    ]
                    digest.update(b"" if first else b",")
                    digest.update(canonical_json(row).encode())
                    first = False
    export_settings = settings.export.model_dump(mode="json")
    rest = [sorted(formats), mix, seed, export_settings]
    digest.update(("]," + ",".join(canonical_json(part) for part in rest) + "]").encode())
    return f"export_{digest.hexdigest()[:ID_HEX_CHARS]}"
