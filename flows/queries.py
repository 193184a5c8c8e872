"""Named selections over the store: what is kept, what is unfinished, what each stage has left.

The rules live here once:
- a *kept task* has an ok rating that keeps it; the tasks a teacher runs are the kept ones
  plus the irrelevant and diversified variants of kept originals;
- a *kept trajectory* is one whose newest ok rating keeps it (a re-rating replaces the verdict);
- an item is *unfinished* when it has no row yet, or its row is an error whose reason is
  retryable (`toucan.errors.RETRYABLE_REASONS`) and it has been tried fewer than
  `retries.max_attempts` times (the row's `attempts`); past that it is *given up*. The stages
  select unfinished items and the pipeline's completeness check counts them (`pending_*`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import islice
from typing import Any, TypeVar, cast

import orjson
import polars as pl

from flows.run_context import Stream
from tasks.diversify import MODES, variant_id
from tasks.filter_tasks import make_rating_id as task_rating_id
from tasks.filter_trajectories import RatingItem
from tasks.filter_trajectories import make_rating_id as trajectory_rating_id
from tasks.irrelevance import irrelevant_task_id
from tasks.llm_batch import chunked
from tasks.sampling import ServerView
from toucan.config import Settings
from toucan.errors import RETRYABLE_REASONS
from toucan.records import Record, Server, Task, TaskRating, Tool, Trajectory, TrajectoryRating
from toucan.store import Store, among

ItemT = TypeVar("ItemT")
KeyT = TypeVar("KeyT")
R = TypeVar("R", bound=Record)

# Streaming a selection (`stream_unfinished`): ids checked against the store per query (a
# join that reads the whole table: few, large checks; 16k ids are ~2 MB), keys read per page
# of a table walk (each page sorts what is left of the table), and records read per query as
# the stream hands them out (about one batch).
CHECK_IDS = 16_384
PAGE_ROWS = 8192
LOAD_ITEMS = 1024

KEPT_TASK_IDS = "SELECT task_id FROM task_ratings WHERE keep AND status = 'ok'"


def kept_trajectory_ratings(column: str = "rating_id", within: str = "true") -> str:
    """SQL selecting `column` of the rating that keeps each kept trajectory: its newest ok
    rating, when that one keeps it. `within` restricts the ratings ranked; it must be a
    condition on `trajectory_id` alone (e.g. `trajectory_id BETWEEN $1 AND $2`), so a
    trajectory's ratings are all in or all out and the answer for it does not change: DuckDB
    then ranks only those rows, not the whole table."""
    return f"""
    SELECT {column} FROM trajectory_ratings WHERE status = 'ok' AND ({within})
    QUALIFY row_number() OVER (
        PARTITION BY trajectory_id ORDER BY created_at DESC, rating_id) = 1 AND keep"""


def latest_task_ratings(within: str = "true") -> str:
    """SQL selecting the rating id of the assessment that describes each task: its newest ok
    rating, kept or not. `within` restricts the ratings ranked, a condition on `task_id`
    alone (as `kept_trajectory_ratings`'s on `trajectory_id`)."""
    return f"""
    SELECT rating_id FROM task_ratings WHERE status = 'ok' AND ({within})
    QUALIFY row_number() OVER (PARTITION BY task_id ORDER BY created_at DESC, rating_id) = 1"""


KEPT_TRAJECTORY_RATING_IDS = kept_trajectory_ratings()
KEPT_TRAJECTORY_IDS = kept_trajectory_ratings("trajectory_id")
LATEST_TASK_RATING_IDS = latest_task_ratings()
KEPT_ORIGINAL_TASKS = f"status = 'ok' AND kind = 'original' AND task_id IN ({KEPT_TASK_IDS})"
TEACHER_TASKS = (
    f"status = 'ok' AND (task_id IN ({KEPT_TASK_IDS}) OR (kind IN ('irrelevant', 'diversified') "
    f"AND parent_id IN ({KEPT_TASK_IDS})))"
)
# multi-turn's candidates: the tasks it splits, and the trajectories it extends (kept,
# function-calling, of an original task: any status, as the stage always took them) with
# their task's servers
MULTI_TOOL_KEPT_TASKS = f"{KEPT_ORIGINAL_TASKS} AND json_array_length(target_tools) >= 2"
EXTEND_CANDIDATES = "status = 'ok' AND kind = 'original' AND style = 'function-calling'"
# the kept ones among the candidates of one page ($1..$2, ids) with their task's servers: only
# that page's ratings are ranked (ranking the whole table per page made the walk quadratic)
IN_PAGE = "trajectory_id BETWEEN $1 AND $2"
EXTENDABLE_IN_PAGE = f"""
    SELECT t.trajectory_id, k.server_ids
    FROM (SELECT trajectory_id, task_id FROM trajectories
        WHERE {IN_PAGE} AND {EXTEND_CANDIDATES}
        AND trajectory_id IN ({kept_trajectory_ratings("trajectory_id", IN_PAGE)})) t
    JOIN tasks k ON k.task_id = t.task_id AND k.kind = 'original'
    ORDER BY t.trajectory_id"""
# SQL literal list of the retryable reasons: the tokens are our own snake_case constants
RETRYABLE_LIST = ", ".join(f"'{reason}'" for reason in sorted(RETRYABLE_REASONS))
RETRYABLE_ERROR = f"status = 'error' AND coalesce(reason, '') IN ({RETRYABLE_LIST})"


def to_retry(max_attempts: int) -> str:
    """SQL condition: the row is a retryable error of an item not yet given up."""
    return f"{RETRYABLE_ERROR} AND coalesce(attempts, 1) < {int(max_attempts)}"


def finished(max_attempts: int) -> str:
    """SQL condition: the row is a final answer, or a retryable error tried `max_attempts`
    times (given up)."""
    return f"NOT ({to_retry(max_attempts)})"


def load_server_views(store: Store) -> list[ServerView]:
    """Servers usable for synthesis (ok, or specs_only from a catalog) with current tools."""
    servers = store.select(Server, "status IN ('ok', 'specs_only') ORDER BY server_id")
    tools: dict[str, list[Tool]] = {}
    for tool in store.select(Tool, "current ORDER BY server_id, name"):
        tools.setdefault(tool.server_id, []).append(tool)
    return [ServerView(server=s, tools=tuple(tools.get(s.server_id, ()))) for s in servers]


def walk_teacher_tasks(store: Store) -> Iterator[tuple[str, list[str]]]:
    """(task id, server ids) of the tasks the trajectories stage runs (kept tasks and variants
    of kept originals), in id order, a page at a time (`walk_keys`): the candidates of the
    stage's plan, without their rows."""
    return walk_with_servers(store, Task, TEACHER_TASKS, "server_ids")


def walk_multi_tool_tasks(store: Store) -> Iterator[tuple[str, list[str]]]:
    """(task id, server ids) of the kept original tasks with two target tools or more, in id
    order, a page at a time: the tasks multi-turn splits, without their rows."""
    return walk_with_servers(store, Task, MULTI_TOOL_KEPT_TASKS, "server_ids")


def walk_extendable_trajectories(store: Store) -> Iterator[tuple[str, list[str]]]:
    """(trajectory id, its task's server ids) of the kept function-calling trajectories of
    original tasks, in id order, a page at a time: the trajectories multi-turn extends,
    without their rows."""
    candidates = walk_keys(store, Trajectory, EXTEND_CANDIDATES, "trajectory_id")
    for page in chunked((key for _, key in candidates), PAGE_ROWS):
        for trajectory_id, servers in store.query(EXTENDABLE_IN_PAGE, [page[0], page[-1]]):
            yield trajectory_id, server_list(servers)


def walk_with_servers(
    store: Store, model: type[Record], where: str, server_ids: str
) -> Iterator[tuple[str, list[str]]]:
    """(key, server ids) of the rows of `model` matching `where`, in key order (`walk_keys`);
    `server_ids`: the column of a row's JSON list of server ids."""
    key = model.__key__[0]
    for _, row_id, servers in walk_keys(store, model, where, key, server_ids):
        yield row_id, server_list(servers)


def server_list(server_ids: str | list[str]) -> list[str]:
    """A `server_ids` cell as read: JSON text, or already a list."""
    return orjson.loads(server_ids) if isinstance(server_ids, str) else server_ids


def select_kept_original_tasks(store: Store) -> list[Task]:
    """Original tasks the task judge kept, in id order (extensions derive from these)."""
    return store.select(Task, f"{KEPT_ORIGINAL_TASKS} ORDER BY task_id")


def stream_kept_original_tasks(
    store: Store, modes: Sequence[str], derived_id: Callable[[str, str], str], max_attempts: int
) -> tuple[Stream[tuple[Task, str]], int]:
    """(the (kept original task, mode) pairs whose derived task row, `derived_id(task_id,
    mode)`, is unfinished, in task id order then `modes` order, streamed; how many pairs are
    finished): the plan of a stage that derives tasks from the kept ones (irrelevance: one
    mode; diversify: one per rewrite mode), in flat memory whatever the number of tasks."""

    def pairs() -> Iterator[tuple[tuple[Any, ...], str]]:
        for key in walk_keys(store, Task, KEPT_ORIGINAL_TASKS, "task_id"):
            yield from ((key, mode) for mode in modes)

    def load(keys: list[tuple[tuple[Any, ...], str]]) -> list[tuple[Task, str]]:
        walked = list({key[1]: key for key, _ in keys}.values())
        tasks = {t.task_id: t for t in select_walked(store, Task, "task_id", walked)}
        return [(tasks[key[1]], mode) for key, mode in keys if key[1] in tasks]

    return stream_unfinished(
        store,
        Task,
        pairs,
        lambda pair: derived_id(pair[0][1], pair[1]),
        max_attempts,
        load=load,
    )


def select_kept_trajectory_ratings(store: Store) -> list[TrajectoryRating]:
    """The rating that keeps each kept trajectory (its newest ok one)."""
    return store.select(TrajectoryRating, f"rating_id IN ({KEPT_TRAJECTORY_RATING_IDS})")


def unfinished_ids(
    store: Store, model: type[Record], ids: Sequence[str], max_attempts: int
) -> set[str]:
    """Those of `ids` with no row of `model` yet, or whose row is a retryable error tried
    fewer than `max_attempts` times."""
    ids = list(ids)
    existing = store.existing_ids(model, ids)
    key = model.__key__[0]
    retry: set[str] = set()
    if existing:  # a join, not list_contains: that compares every row with every id
        rows = store.query_with(
            f'SELECT t."{key}" FROM {model.__table__} t JOIN found f ON t."{key}" = f.id '
            f"WHERE {to_retry(max_attempts)}",
            {"found": pl.DataFrame({"id": sorted(existing)})},
        )
        retry = {row[0] for row in rows}
    return (set(ids) - existing) | retry


def split_unfinished(
    store: Store,
    model: type[Record],
    items: Sequence[ItemT],
    row_id: Callable[[ItemT], str],
    max_attempts: int,
) -> tuple[list[ItemT], int]:
    """(the items whose row of `model`, keyed `row_id(item)`, is unfinished (`unfinished_ids`),
    in their order; how many of them are finished): a stage's planned work and the count of
    what earlier runs did. The list form of `stream_unfinished`, for selections small enough
    to hold (the extension stages')."""
    todo, finished = stream_unfinished(store, model, lambda: items, row_id, max_attempts)
    return list(todo), finished


def stream_unfinished(
    store: Store,
    model: type[Record],
    keys: Callable[[], Iterable[KeyT]],
    row_id: Callable[[KeyT], str],
    max_attempts: int,
    *,
    limit: int | None = None,
    load: Callable[[list[KeyT]], Iterable[ItemT]] | None = None,
    usable: Callable[[KeyT], bool] = lambda key: True,
) -> tuple[Stream[ItemT], int]:
    """`split_unfinished` in flat memory, for selections of any size: (a Stream of the items
    whose row of `model` is unfinished, in the order of `keys`, at most `limit`; how many
    are finished). `keys()` makes the candidates afresh each time (a plan, or a keyset walk
    of a table): once now, their ids checked against the store CHECK_IDS at a time, keeping
    one byte per candidate (to do or not), and again as the stream is consumed, handing out
    the marked ones (the run writes only rows of items already handed out, and holds the
    writer lock: both walks see the same candidates). `load` turns the keys to do into the
    items, LOAD_ITEMS at a time (default: the keys are the items); a key that is not
    `usable` (its item cannot be made) counts as finished when it is, and is never handed
    out. ValueError when the second walk finds another number of candidates."""
    marks = bytearray()
    finished = 0
    for chunk in chunked(((row_id(key), usable(key)) for key in keys()), CHECK_IDS):
        todo_ids = unfinished_ids(store, model, [row for row, _ in chunk], max_attempts)
        for row, can in chunk:
            marks.append(row in todo_ids and can)
            finished += row not in todo_ids
    todo = marks.count(1)

    def items() -> Iterator[ItemT]:
        marked = (key for key, mark in zip(keys(), marks, strict=True) if mark)
        selected = islice(marked, limit)
        if load is None:
            yield from cast(Iterator[ItemT], selected)
            return
        for part in chunked(selected, LOAD_ITEMS):
            yield from load(part)

    return Stream(todo if limit is None else min(todo, limit), items), finished


def walk_keys(
    store: Store, model: type[Record], where: str, order: str, *columns: str
) -> Iterator[tuple[Any, ...]]:
    """(order value, key, *columns) of the rows of `model` matching `where`, in the stable
    order (`order`, key), PAGE_ROWS rows per query: each page starts after the last row of
    the one before (keyset pagination), so no result stays open while the run writes."""
    if not store.count(model, where):
        return
    key = model.__key__[0]
    select = ", ".join([order, key, *columns])
    after: list[Any] = []
    while True:
        since = f" AND ({order} > ? OR ({order} = ? AND {key} > ?))" if after else ""
        page = store.query(
            f"SELECT {select} FROM {model.__table__} WHERE ({where}){since} "
            f"ORDER BY {order}, {key} LIMIT {PAGE_ROWS}",
            after,
        )
        yield from page
        if len(page) < PAGE_ROWS:
            return
        after = [page[-1][0], page[-1][0], page[-1][1]]


def select_walked(
    store: Store, model: type[R], order: str, keys: Sequence[tuple[Any, ...]]
) -> list[R]:
    """The rows of `model` of keys from `walk_keys(..., order)`, in their order. The range
    of `order` they span lets DuckDB skip the row groups outside it (min/max zone maps): a
    batch's rows without reading the table."""
    if not keys:
        return []
    key = model.__key__[0]
    # list_contains, not `among`: measured in a 300k filter-tasks run, the semi-join read
    # twice the table's blocks of this query (DuckDB's BASE_TABLE memory 82-94 MB against
    # 37-45; peak RSS 634 against 605 MB), though it leaves the key index unloaded
    where = f'{order} BETWEEN ? AND ? AND list_contains(?, "{key}")'
    ids = [k[1] for k in keys]
    rows = {getattr(r, key): r for r in store.select(model, where, [keys[0][0], keys[-1][0], ids])}
    return [rows[row_id] for row_id in ids if row_id in rows]


def select_walked_with_tasks(
    store: Store, order: str, keys: Sequence[tuple[Any, ...]]
) -> list[tuple[Trajectory, Task]]:
    """The trajectories of keys from `walk_keys(store, Trajectory, ..., order)` with their
    tasks, in their order (`select_walked`); a trajectory whose task is gone is left out."""
    rows = select_walked(store, Trajectory, order, keys)
    task_ids = sorted({r.task_id for r in rows})
    tasks = {t.task_id: t for t in store.select(Task, among("task_id"), [task_ids])}
    return [(row, tasks[row.task_id]) for row in rows if row.task_id in tasks]


def select_unrated_tasks(
    store: Store, judges: list[str], limit: int | None, max_attempts: int
) -> tuple[Stream[Task], int]:
    """(ok tasks without a final rating, in a stable order, at most `limit`, streamed; how
    many are rated). A rating that is a retryable error counts as missing until tried
    `max_attempts` times."""
    return stream_unfinished(
        store,
        TaskRating,
        lambda: walk_keys(store, Task, "status = 'ok'", "created_at"),
        lambda key: task_rating_id(key[1], judges),
        max_attempts,
        limit=limit,
        load=lambda keys: select_walked(store, Task, "created_at", keys),
    )


def select_unrated_trajectories(
    store: Store, judges: list[str], limit: int | None, max_attempts: int
) -> tuple[Stream[RatingItem], int]:
    """(trajectories without a final rating, with their tasks, in a stable order, at most
    `limit`, streamed; how many are rated). A trajectory whose task is gone is left out. A
    rating that is a retryable error counts as missing until tried `max_attempts` times."""

    def rating_items(keys: list[tuple[Any, ...]]) -> list[RatingItem]:
        pairs = select_walked_with_tasks(store, "started_at", keys)
        return [RatingItem(trajectory=row, task=task) for row, task in pairs]

    has_task = "task_id IN (SELECT task_id FROM tasks)"
    return stream_unfinished(
        store,
        TrajectoryRating,
        lambda: walk_keys(store, Trajectory, "true", "started_at", has_task),
        lambda key: trajectory_rating_id(key[1], judges),
        max_attempts,
        limit=limit,
        load=rating_items,
        usable=lambda key: bool(key[2]),
    )


def count_unfinished(
    store: Store, table: str, where: str, key: str, ledger: str, max_attempts: int
) -> int:
    """Rows of `table` matching `where` whose `key` has no finished row in `ledger` (a table,
    or `table WHERE condition`): the resume anti-join, counted. 0 while there is no store."""
    if not store.path.exists():
        return 0
    ledger_where = " AND " if " WHERE " in ledger else " WHERE "
    sql = (
        f"SELECT count(*) FROM {table} WHERE {where} AND {key} NOT IN "
        f"(SELECT {key} FROM {ledger}{ledger_where}{finished(max_attempts)})"
    )
    return int(store.query(sql)[0][0])


def count_to_retry(store: Store, table: str, where: str, max_attempts: int) -> int:
    """Rows of `table` matching `where` that are retryable errors not given up: the pending
    work of a stage whose items are not derived from another table (synthesis slots)."""
    if not store.path.exists():
        return 0
    sql = f"SELECT count(*) FROM {table} WHERE {where} AND {to_retry(max_attempts)}"
    return int(store.query(sql)[0][0])


def pending_synthesize(store: Store, settings: Settings) -> int:
    """Synthesized tasks whose row is a retryable error (the plan's other slots are counted
    by the run that plans them)."""
    tries = settings.retries.max_attempts
    return count_to_retry(store, "tasks", "kind = 'original'", tries)


def pending_filter_tasks(store: Store, settings: Settings) -> int:
    """Ok tasks without a finished rating."""
    tries = settings.retries.max_attempts
    return count_unfinished(store, "tasks", "status = 'ok'", "task_id", "task_ratings", tries)


def pending_trajectories(store: Store, settings: Settings) -> int:
    """Teacher tasks without a finished (single-turn) trajectory."""
    single_turn = "trajectories WHERE kind <> 'multi_turn'"
    tries = settings.retries.max_attempts
    return count_unfinished(store, "tasks", TEACHER_TASKS, "task_id", single_turn, tries)


def pending_filter_trajectories(store: Store, settings: Settings) -> int:
    """Ok trajectories without a finished rating."""
    ok, tries = "status = 'ok'", settings.retries.max_attempts
    return count_unfinished(store, "trajectories", ok, "trajectory_id", "trajectory_ratings", tries)


def irrelevance_plan(store: Store, max_attempts: int) -> tuple[Stream[Task], int]:
    """(kept original tasks without their irrelevant pair, streamed; how many have it)."""
    pairs, finished = stream_kept_original_tasks(
        store, ("",), lambda task_id, _: irrelevant_task_id(task_id, 0), max_attempts
    )
    return pairs.map(lambda pair: pair[0]), finished


def diversify_plan(store: Store, max_attempts: int) -> tuple[Stream[tuple[Task, str]], int]:
    """((kept original task, mode) pairs without a variant row, streamed; how many have one)."""
    return stream_kept_original_tasks(
        store, MODES, lambda task_id, mode: variant_id(task_id, mode, 0), max_attempts
    )


def pending_irrelevance(store: Store, settings: Settings) -> int:
    """Kept original tasks without their irrelevant pair."""
    return len(irrelevance_plan(store, settings.retries.max_attempts)[0])


def pending_diversify(store: Store, settings: Settings) -> int:
    """(kept original task, mode) pairs without a variant row."""
    return len(diversify_plan(store, settings.retries.max_attempts)[0])


def pending_multi_turn(store: Store, settings: Settings) -> int:
    """Conversations whose row is a retryable error (which conversations a run makes is
    decided by its parameters, so only the failed ones are known to be owed)."""
    tries = settings.retries.max_attempts
    return count_to_retry(store, "trajectories", "kind = 'multi_turn'", tries)


def trajectory_scopes(row: Trajectory) -> list[tuple[str, str]]:
    """The (table, row) cells a trajectory counts in: the total, its teacher, and each server
    whose tools it was offered ("(none)" for a trajectory offered none)."""
    servers = {entry["server"] for entry in row.tool_name_map.values()} or {"(none)"}
    return [("total", ""), ("teacher", row.teacher), *(("server", s) for s in sorted(servers))]


PendingQuery = Callable[[Store, Settings], int]
