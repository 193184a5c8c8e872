"""An export chunk's read (flows/export_sources.py) reads and ranks only its own rows and their
ratings, and gives the rows the whole-table rules give (issue 14: the per-chunk read used to
rank every rating of the store, so the export grew quadratically with it)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from flows.export_sources import (
    CHUNK_RATINGS,
    CHUNK_ROWS,
    KEPT_ROWS,
    TASKS_LATEST_RATINGS,
    load_export_sources,
    plan_chunks,
)
from flows.queries import KEPT_TRAJECTORY_RATING_IDS, LATEST_TASK_RATING_IDS
from tests.bulk_store import fill_tasks, fill_trajectories
from tests.export.seeding import (
    WEATHER_TOOLS,
    fill_kept_trajectories,
    make_trajectory,
    tool_use_messages,
    trajectory_rating,
)
from toucan.records import Server
from toucan.store import Store

ROWS = 800  # kept candidates; as many rows again of another run, none kept
CHUNK = 25
RATINGS_PER_ROW = 4  # the most ok ratings a seeded trajectory has (RERATINGS)
# the columns a task's ratings are ranked by: scanned over the whole table (no index on
# task_ratings.task_id), the one part of a chunk's read that does not shrink to the chunk
RANKING_KEYS = {"task_id", "rating_id", "created_at", "status"}
# re-ratings of the bulk rows, made in SQL from the first rating (`i` a row's number): an
# older verdict, a newer one that drops a third of the rows, a tie on the newest time broken
# by the id, and a newest error that must not count
RERATINGS = """
INSERT INTO trajectory_ratings BY NAME
SELECT r.* REPLACE (r.rating_id || v.suffix AS rating_id,
    r.created_at + v.shift * INTERVAL 1 HOUR AS created_at,
    CASE v.suffix WHEN '_old' THEN NOT r.keep WHEN '_new' THEN hash(r.rating_id) % 3 <> 0
        ELSE r.keep END AS keep,
    CASE v.suffix WHEN '_err' THEN 'error' ELSE 'ok' END AS status)
FROM trajectory_ratings r,
    (VALUES ('_old', -1), ('_new', 1), ('_err', 2), ('_a_tie', 1)) v(suffix, shift)
WHERE r.trajectory_id LIKE 'traj_bulk_%' AND (v.suffix <> '_a_tie' OR hash(r.rating_id) % 7 = 0)
"""
TASK_RERATINGS = """
INSERT INTO task_ratings BY NAME
SELECT r.* REPLACE (r.rating_id || '_new' AS rating_id,
    r.created_at + INTERVAL 1 HOUR AS created_at)
FROM task_ratings r WHERE hash(r.task_id) % 2 = 0
"""


@pytest.fixture(scope="module")
def rerated(tmp_path_factory: pytest.TempPathFactory) -> Store:
    """ROWS kept trajectories, re-rated several times over (RERATINGS, TASK_RERATINGS); as
    many trajectories of another run whose only rating rejects them; a few kept rows whose
    task is gone."""
    store = Store(tmp_path_factory.mktemp("chunks") / "toucan.duckdb")
    with store.holding():
        fill_rerated(store)
    return store


def fill_rerated(store: Store) -> None:
    fill_kept_trajectories(store, ROWS)
    store.execute(RERATINGS)
    store.execute(TASK_RERATINGS)
    fill_tasks(store, ROWS, ["srv_weather"], tag="other", tools=["get_forecast"])
    messages = tool_use_messages("QUESTION", {"city": "Rome"}, "rain")
    template = make_trajectory(
        "traj_template", "task_template", "original", messages, WEATHER_TOOLS
    )
    rejecting = trajectory_rating(template.trajectory_id, keep=False)
    fill_trajectories(store, template, rejecting, tag="other")
    store.execute("DELETE FROM tasks WHERE task_id LIKE 'task_bulk_%' AND hash(task_id) % 50 = 0")


def read_by_chunk(store: Store) -> list[tuple[str, str, str | None]]:
    """(trajectory, rating keeping it, task rating) of every row the chunks read, in order."""
    servers = {s.server_id: s for s in store.select(Server)}
    rows = []
    with store.holding():  # one connection for every chunk, as the export's run has
        for chunk in plan_chunks(store, ROWS // 4):
            sources, unreadable = load_export_sources(store, chunk, servers)
            assert not unreadable
            rows += [
                (
                    s.trajectory.trajectory_id,
                    s.trajectory_rating.rating_id,
                    s.task_rating.rating_id if s.task_rating else None,
                )
                for s in sources
            ]
    return rows


def test_the_chunks_read_the_rows_the_whole_table_rules_keep(rerated: Store) -> None:
    whole = rerated.query(
        "SELECT t.trajectory_id, r.rating_id, k.rating_id "
        f"FROM (SELECT * FROM trajectories WHERE {KEPT_ROWS}) t "
        f"JOIN trajectory_ratings r ON r.trajectory_id = t.trajectory_id "
        f"AND r.rating_id IN ({KEPT_TRAJECTORY_RATING_IDS}) "
        "LEFT JOIN task_ratings k ON k.task_id = t.task_id "
        f"AND k.rating_id IN ({LATEST_TASK_RATING_IDS}) "
        "ORDER BY t.trajectory_id"
    )
    assert read_by_chunk(rerated) == [tuple(row) for row in whole]
    # the seeding makes every rule matter: re-ratings drop rows and replace verdicts, a tie
    # is broken by the id, tasks are gone, the other run's rows are all rejected
    assert any(rating.endswith("_new") for _, rating, _ in whole)
    assert any(rating.endswith("_a_tie") for _, rating, _ in whole)
    assert ROWS / 2 < len(whole) < ROWS * 0.7
    assert any(task_rating.endswith("_new") for *_, task_rating in whole)
    assert not any(trajectory.startswith("traj_other") for trajectory, *_ in whole)


def busiest_operator_rows(store: Store, sql: str, params: list[Any]) -> int:
    """The most rows any operator of the query's executed plan put out (EXPLAIN ANALYZE; a
    scan counts the rows its filter passes on), leaving out scans of the ranking keys alone:
    a task's ratings are found by a scan of task_ratings' task ids (no index on them)."""
    with store.connect(read_only=True) as con:
        _, plan = con.execute(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}", params).fetchone()

    def most(node: dict[str, Any]) -> int:
        below = [most(child) for child in node.get("children", [])]
        projections = node.get("extra_info", {}).get("Projections", [])
        keys_only = node["name"] == "SEQ_SCAN" and set(projections) <= RANKING_KEYS
        return max([0 if keys_only else int(node.get("intermediate_rows", 0)), *below])

    return max(most(node) for node in json.loads(plan)["operator"])


def test_a_chunk_read_ranks_only_the_chunks_rows_and_ratings(rerated: Store) -> None:
    chunks = plan_chunks(rerated, CHUNK)
    chunk = list(chunks[len(chunks) // 2])
    task_ids = sorted(
        {task for (task,) in rerated.query(f"SELECT task_id FROM ({CHUNK_ROWS})", chunk)}
    )
    bound = CHUNK * RATINGS_PER_ROW * 2  # the chunk spans ~CHUNK * 1.5 rows (some not kept)
    queries = [
        (CHUNK_ROWS, chunk),
        (f"SELECT * FROM trajectory_ratings WHERE {CHUNK_RATINGS}", chunk),
        (f"SELECT * FROM task_ratings WHERE {TASKS_LATEST_RATINGS}", [task_ids]),
    ]
    # ranking the whole table per chunk passed every ok rating (~2.4k here) through
    busiest = [busiest_operator_rows(rerated, sql, params) for sql, params in queries]
    assert max(busiest) <= bound, busiest


def test_a_chunk_without_kept_rows_reads_nothing(rerated: Store) -> None:
    assert load_export_sources(rerated, ("traj_zzz", "traj_zzz~"), {}) == ([], {})
