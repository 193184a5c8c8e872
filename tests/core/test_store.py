from __future__ import annotations

import concurrent.futures
import json
import multiprocessing
import threading
import time
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import pytest

from toucan.errors import ConfigError, StoreError, StoreLocked
from toucan.ids import make_id
from toucan.records import (
    CallLog,
    DedupIndexEntry,
    Event,
    Score,
    Server,
    Task,
    TaskRating,
    Tool,
    Trajectory,
    Usage,
)
from toucan.store import (
    ROW_GROUP_ROWS,
    Store,
    create_table_sql,
    resolve_store_path,
    table_columns,
)


def make_server(i: int) -> Server:
    return Server(
        server_id=make_id("srv", "fleet", f"s{i}"),
        name=f"s{i}",
        source="fleet",
        transport="stdio",
        status="ok",
        spec={"command": "x", "args": [str(i)]},
        secondary_domains=["Weather"],
    )


def test_inserting_the_same_records_twice_adds_no_rows(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.duckdb")
    servers = [make_server(i) for i in range(50)]
    assert store.insert(servers) == 50
    assert store.insert(servers) == 0
    assert store.count(Server) == 50


def test_json_and_nested_fields_round_trip(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.duckdb")
    rating = TaskRating(
        rating_id="r1",
        task_id="t1",
        judge="j",
        scores={"question_quality": Score(reasoning="ok", score=4)},
    )
    store.insert([rating, make_server(1)])
    [back] = store.select(TaskRating)
    assert back.scores["question_quality"].score == 4
    [srv] = store.select(Server, "name = ?", ["s1"])
    assert srv.spec == {"command": "x", "args": ["1"]}
    assert srv.secondary_domains == ["Weather"]


def test_integer_lists_are_native_columns_written_from_records_or_frames(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.duckdb")
    assert table_columns(DedupIndexEntry)["band_keys"] == "BIGINT[]"
    extreme = [-(2**63), 2**63 - 1, 0]
    store.insert([DedupIndexEntry(task_id="a", scheme="x", band_keys=extreme)])
    frame = pl.DataFrame(
        {"task_id": ["a", "b"], "scheme": ["y", "y"], "band_keys": [[1], [2, 3]]},
        schema={"task_id": pl.Utf8, "scheme": pl.Utf8, "band_keys": pl.List(pl.Int64)},
    )
    assert store.insert_frame(DedupIndexEntry, frame) == 1  # "a" exists: skipped
    rows = {row.task_id: row for row in store.select(DedupIndexEntry)}
    assert rows["a"].band_keys == extreme and rows["a"].scheme == "x"
    assert rows["b"].band_keys == [2, 3]
    assert store.query("SELECT count(*) FROM dedup_index, unnest(band_keys)") == [(5,)]
    with pytest.raises(StoreError):
        store.insert_frame(DedupIndexEntry, frame.drop("scheme"))
    assert store.count(DedupIndexEntry) == 2


def test_update_frame_sets_columns_by_key_and_leaves_the_rest(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.duckdb")
    store.insert([make_server(1), make_server(2)])
    before = {srv.server_id: srv for srv in store.select(Server)}
    changed = make_server(2).server_id
    frame = pl.DataFrame({"server_id": [changed], "reason": ["gone"]})
    store.update_frame(Server, frame)
    after = {srv.server_id: srv for srv in store.select(Server)}
    assert after[changed] == before[changed].model_copy(update={"reason": "gone"})
    assert after[make_server(1).server_id] == before[make_server(1).server_id]
    with pytest.raises(StoreError):
        store.update_frame(Server, frame.drop("server_id"))


def test_upsert_replaces_changed_state(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.duckdb")
    store.insert([make_server(1)])
    changed = make_server(1).model_copy(
        update={"status": "rejected", "reason": "needs_credentials"}
    )
    store.upsert([changed])
    [srv] = store.select(Server)
    assert (srv.status, srv.reason) == ("rejected", "needs_credentials")


def test_a_batch_holding_one_key_twice_keeps_the_first(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.duckdb")
    first, second = make_server(1), make_server(1).model_copy(update={"name": "other"})
    assert store.insert([first, second]) == 1
    assert store.select(Server)[0].name == "s1"


def test_schema_is_derived_from_records_and_migrations_are_recorded(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.duckdb")
    store.ensure_schema()
    assert store.schema_version() >= 1
    cols = {
        r[0]: r[1]
        for r in store.query(
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_name='tools'"
        )
    }
    assert set(cols) == set(table_columns(Tool))
    assert cols["input_schema"] == "JSON"


def test_a_column_added_to_a_record_is_migrated_into_an_old_store(tmp_path: Path) -> None:
    path = tmp_path / "s.duckdb"
    store = Store(path)
    store.ensure_schema()
    store.execute("ALTER TABLE servers DROP COLUMN featured")  # an older schema
    before = store.schema_version()
    Store(path).insert([make_server(3)])
    assert Store(path).schema_version() == before + 1
    assert Store(path).select(Server)[0].featured is False


def test_tools_stored_with_python_annotation_names_read_back_under_protocol_names(
    tmp_path: Path,
) -> None:
    """Stores written before annotations kept their MCP names hold `read_only_hint` and
    read_only = false; reading them must give `readOnlyHint` and read_only = true."""
    path = tmp_path / "s.duckdb"
    store = Store(path)
    tool = Tool(tool_id="tool_1", server_id="srv_1", name="status", schema_hash="h")
    store.insert([tool])
    store.execute(
        "UPDATE tools SET read_only = false, annotations = ?",
        ['{"read_only_hint": true, "open_world_hint": false, "title": "Status"}'],
    )
    for column in ("repairs", "repair_detail"):
        store.execute(f"ALTER TABLE tools DROP COLUMN {column}")  # the older schema
    [read] = Store(path).select(Tool)
    assert read.annotations == {"readOnlyHint": True, "openWorldHint": False, "title": "Status"}
    assert read.read_only is True and read.repairs == []
    # the next write adds the columns; the old row gets the fields' defaults, not NULL
    Store(path).insert([tool.model_copy(update={"tool_id": "tool_2", "repairs": ["x"]})])
    by_id = {t.tool_id: t for t in Store(path).select(Tool)}
    assert (by_id["tool_1"].repairs, by_id["tool_1"].repair_detail) == ([], "")
    assert by_id["tool_2"].repairs == ["x"]


def test_rows_older_than_an_added_column_read_back_with_its_default(tmp_path: Path) -> None:
    path = tmp_path / "s.duckdb"
    Store(path).insert([make_server(1), Trajectory(trajectory_id="t", task_id="k", teacher="T")])
    store = Store(path)
    store.execute("ALTER TABLE servers DROP COLUMN featured")  # rows from an older schema
    store.execute("ALTER TABLE trajectories DROP COLUMN original_tools")
    Store(path).ensure_schema()
    assert Store(path).select(Server)[0].featured is False
    assert Store(path).select(Trajectory)[0].original_tools == {}


def test_an_old_store_gets_its_task_accounting_moved_from_metadata_into_columns(
    tmp_path: Path,
) -> None:
    """Stores older than Task.deployment/usage/cost_usd/cached held them in the metadata;
    their version numbers after 1 are column additions, so the move is known by name."""
    path = tmp_path / "s.duckdb"
    store = Store(path)
    store.insert([Task(task_id=name, strategy="single_server") for name in ("made", "odd", "bare")])
    old_keys = {"deployment": "Gen-A", "tokens_in": 12, "tokens_out": 3, "cost_usd": 0.5}
    metadata = {
        "made": {"slot": 1, **old_keys, "cached": True, "model": "openai/gen-a"},
        "odd": {"tokens_in": "many", "deployment": "Gen-B"},  # a count that is not a number
        "bare": {"slot": 2},  # an error row: no reply, no accounting
    }
    for task_id, value in metadata.items():
        store.execute(
            "UPDATE tasks SET metadata = ? WHERE task_id = ?", [json.dumps(value), task_id]
        )
    for column in ("deployment", "usage", "cost_usd", "cached"):
        store.execute(f"ALTER TABLE tasks DROP COLUMN {column}")  # the older schema
    store.execute("DELETE FROM schema_migrations WHERE version > 1")
    store.execute("INSERT INTO schema_migrations VALUES (2, 'add column servers.sandbox', NULL)")

    Store(path).ensure_schema()
    tasks = {t.task_id: t for t in Store(path).select(Task)}
    made = tasks["made"]
    assert (made.deployment, made.cost_usd, made.cached) == ("Gen-A", 0.5, True)
    assert made.usage == Usage(prompt_tokens=12, completion_tokens=3)
    assert made.usage.total_tokens == 15
    assert made.metadata == {"slot": 1, "model": "openai/gen-a"}
    odd = tasks["odd"]
    assert (odd.deployment, odd.usage.prompt_tokens, odd.metadata) == (
        "Gen-B",
        0,
        {"tokens_in": "many"},
    )
    bare = tasks["bare"]
    assert (bare.deployment, bare.usage, bare.metadata) == (None, Usage(), {"slot": 2})
    version = Store(path).schema_version()
    Store(path).ensure_schema()  # once only
    assert Store(path).schema_version() == version


def test_typed_usage_and_call_log_round_trip_and_old_rows_read_back(tmp_path: Path) -> None:
    path = tmp_path / "s.duckdb"
    entry = CallLog(call_id="c0", name="add", server_id="srv", tool="add", is_error=True)
    row = Trajectory(
        trajectory_id="t",
        task_id="k",
        teacher="T",
        tool_call_log=[entry],
        usage=Usage(prompt_tokens=5, completion_tokens=2, server_request_tokens=4),
    )
    Store(path).insert([row])
    [back] = Store(path).select(Trajectory)
    assert back.tool_call_log == [entry] and back.usage == row.usage
    assert back.usage.total_tokens == 7  # the teacher's turns; server requests apart
    # rows written while usage was a plain dict (with its total) still read
    Store(path).execute(
        "UPDATE trajectories SET usage = ?",
        ['{"prompt_tokens": 9, "completion_tokens": 1, "total_tokens": 10}'],
    )
    assert Store(path).select(Trajectory)[0].usage == Usage(prompt_tokens=9, completion_tokens=1)


def test_existing_ids_is_the_resume_anti_join(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.duckdb")
    servers = [make_server(i) for i in range(5)]
    store.insert(servers[:3])
    ids = [s.server_id for s in servers]
    assert store.existing_ids(Server, ids) == set(ids[:3])


def _hold_lock(
    path: str, ready: multiprocessing.synchronize.Event, release: multiprocessing.synchronize.Event
) -> None:  # type: ignore[name-defined]
    with Store(path).writer_lock("run_a"):
        ready.set()
        release.wait(30)


def test_a_second_writer_on_the_same_store_is_refused(tmp_path: Path) -> None:
    path = str(tmp_path / "s.duckdb")
    ctx = multiprocessing.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold_lock, args=(path, ready, release))
    holder.start()
    try:
        assert ready.wait(30)
        with pytest.raises(StoreLocked), Store(path).writer_lock("run_b"):
            pass
    finally:
        release.set()
        holder.join(30)
    with Store(path).writer_lock("run_c"):
        pass


def test_store_path_comes_from_flag_then_env_then_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOUCAN_STORE", "/tmp/env.duckdb")
    assert resolve_store_path("/tmp/flag.duckdb") == Path("/tmp/flag.duckdb")
    assert resolve_store_path(None) == Path("/tmp/env.duckdb")
    monkeypatch.delenv("TOUCAN_STORE")
    assert resolve_store_path(None) == Path("data/toucan.duckdb")


def test_the_store_caps_duckdb_memory_at_the_env_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = Store(tmp_path / "s.duckdb")
    store.ensure_schema()
    limit = "SELECT current_setting('memory_limit')"
    monkeypatch.setenv("TOUCAN_STORE_MEMORY_LIMIT", "300 MB")
    assert store.query(limit) == [("286.1 MiB",)]
    monkeypatch.setenv("TOUCAN_STORE_MEMORY_LIMIT", "lots")
    with pytest.raises(ConfigError, match="TOUCAN_STORE_MEMORY_LIMIT='lots' is not a size"):
        store.query(limit)


def _count_servers(path: str, out: multiprocessing.Queue[int]) -> None:
    out.put(Store(path).count(Server))


def _read_past_a_busy_writer(path: str, out: multiprocessing.Queue[Any]) -> None:
    """Report whether a plain DuckDB open (one that does not knock) got in within KEPT_OUT_S,
    then how many seconds toucan's own open (which knocks) took to get in, and what it read."""
    deadline, got_in = time.monotonic() + KEPT_OUT_S, False
    while time.monotonic() < deadline and not got_in:
        try:
            duckdb.connect(path, read_only=True).close()
            got_in = True
        except duckdb.IOException:
            time.sleep(0.05)
    started = time.monotonic()
    count = Store(path).count(Server)
    out.put((got_in, time.monotonic() - started, count))


KEPT_OUT_S = 3.0  # longer than the 2 s a busy writer used to hold the file before reopening it


def test_a_writer_busy_without_pause_keeps_the_file_until_a_reader_knocks(
    tmp_path: Path,
) -> None:
    """A run that writes without pause holds its connection (each reopen reloads the primary
    keys' indexes, ~0.4 s per 1M rows), yet a reader in another process asking for the file
    through toucan (`<store>.knock`) gets it at once and the writer goes on after."""
    path = str(tmp_path / "s.duckdb")
    store = Store(path)
    ctx = multiprocessing.get_context("spawn")
    results: multiprocessing.Queue[Any] = ctx.Queue()
    written = 0
    with store.holding():
        store.insert([make_server(written)])
        reader = ctx.Process(target=_read_past_a_busy_writer, args=(path, results))
        reader.start()
        while results.empty():
            written += 1
            store.insert([make_server(written)])
        got_in, waited_s, count = results.get()
        reader.join(30)
        store.insert([make_server(written + 1)])
    assert not got_in  # the writer did not let go of the file on its own
    assert waited_s < 10, waited_s  # knocked: not HOLD_MAX_S (20 s) later
    assert count >= 1  # the row committed before the reader started is there to read
    assert Store(path).count(Server) == written + 2
    print(f"knocking reader got in after {waited_s:.2f} s; {written} writes meanwhile")


def test_a_holding_writer_shares_one_connection_and_lets_readers_in(tmp_path: Path) -> None:
    """While a run holds its connection, this process sees its own writes at once, and a
    reader in another process gets the file as soon as the writer pauses."""
    path = str(tmp_path / "s.duckdb")
    store = Store(path)
    ctx = multiprocessing.get_context("spawn")
    with store.holding():
        store.insert([make_server(1)])
        with store.connect() as outer, Store(path).connect(read_only=True) as inner:
            # a second Store on the same path, read-only, nested: the same held file
            assert inner.execute("SELECT count(*) FROM servers").fetchone() == (1,)
            outer.execute("SELECT 1")
        assert Store(path).count(Server) == 1
        store.insert([make_server(2)])
        results: multiprocessing.Queue[int] = ctx.Queue()
        reader = ctx.Process(target=_count_servers, args=(path, results))
        reader.start()
        assert results.get(timeout=60) == 2  # the idle writer released the file
        reader.join(30)
        store.insert([make_server(3)])  # and takes it back for the next write
    assert Store(path).count(Server) == 3


def primary_keys(path: Path) -> set[str]:
    """The tables of a store file that have a primary key."""
    with duckdb.connect(str(path), read_only=True) as con:
        rows = con.execute(
            "SELECT table_name FROM duckdb_constraints() WHERE constraint_type = 'PRIMARY KEY'"
        ).fetchall()
    return {row[0] for row in rows}


def make_event(i: int, run_id: str = "run_a") -> Event:
    return Event(event_id=make_id("evt", run_id, i), run_id=run_id, stage="synthesize")


def test_append_only_tables_keep_no_key_index_and_refuse_replacing(tmp_path: Path) -> None:
    """events and dedup_index carry no primary key (the ART index DuckDB loads whole on each
    connection's first write); the other tables keep theirs."""
    store = Store(tmp_path / "s.duckdb")
    assert store.insert([make_event(i) for i in range(3)]) == 3
    keyed = primary_keys(store.path)
    assert {"events", "dedup_index"}.isdisjoint(keyed)
    assert {"tasks", "llm_cache", "task_ratings", "runs"} <= keyed
    with pytest.raises(StoreError, match="append-only"):
        store.upsert([make_event(0)])
    assert store.count(Event) == 3


def test_an_old_store_keyed_on_its_append_only_tables_is_rebuilt_without_keys(
    tmp_path: Path,
) -> None:
    path = tmp_path / "s.duckdb"
    Store(path).ensure_schema()
    old_create = create_table_sql(Event)[:-1] + ', PRIMARY KEY ("event_id"))'
    old_index = create_table_sql(DedupIndexEntry)[:-1] + ', PRIMARY KEY ("task_id"))'
    with duckdb.connect(str(path)) as con:  # the schema stores had before: keyed
        con.execute("DROP TABLE events")
        con.execute("DROP TABLE dedup_index")
        con.execute(old_create)
        con.execute(old_index)
        con.executemany(
            f"INSERT INTO events VALUES ({', '.join('?' * len(table_columns(Event)))})",
            [list(make_event(i).model_dump().values()) for i in range(4)],
        )
        con.execute("INSERT INTO dedup_index VALUES ('a', 's1', [1, 2])")
        con.execute(
            "DELETE FROM schema_migrations WHERE description = ?",
            ["drop the primary keys of append-only tables"],
        )
    assert primary_keys(path) >= {"events", "dedup_index"}
    frame = pl.DataFrame({"task_id": ["a"], "scheme": "s1", "band_keys": [[1, 2]]})
    columns = list(table_columns(Event))

    store = Store(path)
    store.ensure_schema()
    assert {"events", "dedup_index"}.isdisjoint(primary_keys(path))
    assert sorted(e.event_id for e in store.select(Event)) == sorted(
        make_event(i).event_id for i in range(4)
    )
    with duckdb.connect(str(path), read_only=True) as con:
        order = [r[0] for r in con.execute("DESCRIBE events").fetchall()]
    assert order == columns
    assert store.insert_frame(DedupIndexEntry, frame) == 0  # "a" is there: skipped still
    assert store.insert([make_event(9)]) == 1
    version = store.schema_version()
    Store(path).ensure_schema()  # once only
    assert Store(path).schema_version() == version


def row_groups(path: Path, table: str) -> int:
    with duckdb.connect(str(path), read_only=True) as con:
        row = con.execute(
            f"SELECT count(DISTINCT row_group_id) FROM pragma_storage_info('{table}')"
        ).fetchone()
    return int(row[0]) if row else 0


def test_the_store_writes_small_row_groups_from_every_kind_of_connection(tmp_path: Path) -> None:
    """DuckDB compresses a table's last row group whole at the checkpoint after it fills: with
    its default 122,880 rows a run's memory jumped ~170 MB every ~123k rows written. The store
    is attached with ROW_GROUP_ROWS-row groups, on short-lived and held connections alike (the
    setting lives in the ATTACH, not the file). The folder's name has a quote in it."""
    path = tmp_path / "it's" / "s.duckdb"
    rows = ROW_GROUP_ROWS * 2 + 100
    Store(path).insert([make_event(i) for i in range(rows)])
    with Store(path).holding():
        Store(path).insert([make_event(i, run_id="run_b") for i in range(rows)])
    assert Store(path).count(Event) == 2 * rows
    assert row_groups(path, "events") >= 2 * rows // ROW_GROUP_ROWS  # 1 group by default


def test_threads_of_one_process_share_the_file_and_a_foreign_open_gets_a_clear_error(
    tmp_path: Path,
) -> None:
    """Connections this process opens to the store share one DuckDB instance (two would be
    refused by DuckDB as a "unique file handle conflict"), so threads read and write at once;
    a plain duckdb.connect of the open file in the same process is told why it cannot."""
    path = tmp_path / "s.duckdb"
    Store(path).ensure_schema()

    def write(start: int) -> None:
        for i in range(start, start + 30):
            Store(path).insert([make_server(i)])

    def read() -> None:
        for _ in range(30):
            Store(path).count(Server)

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        for future in [pool.submit(write, 0), pool.submit(write, 100), pool.submit(read)]:
            future.result()
    assert Store(path).count(Server) == 60
    with Store(path).holding():
        Store(path).insert([make_server(500)])
        with pytest.raises(duckdb.Error, match="already attached"):
            duckdb.connect(str(path))
    with duckdb.connect(str(path)) as con:  # and once the store lets go, it can
        assert con.execute("SELECT count(*) FROM servers").fetchone() == (61,)


def test_an_open_while_another_thread_closes_the_file_waits_for_the_close(tmp_path: Path) -> None:
    """The last user's close checkpoints the file, and DuckDB refuses a second attachment of it
    until that close ends ("unique file handle conflict"): an open in that window waits for it
    instead of failing (it failed the suite's thread test above about once in ten runs)."""
    path = tmp_path / "s.duckdb"
    Store(path).ensure_schema()
    closing = threading.Event()

    def write_then_close() -> None:
        with Store(path).connect() as con:
            # ~12 MB of write-ahead log for the close to checkpoint (~90 ms here): inserts
            # smaller than a row group go to the log, and under checkpoint_threshold (16 MB)
            # no commit checkpoints it first
            con.execute("CREATE TABLE scratch (i BIGINT, h VARCHAR)")
            for start in range(0, 300_000, 10_000):
                con.execute(
                    "INSERT INTO scratch SELECT range, md5(range::VARCHAR) "
                    f"FROM range({start}, {start + 10_000})"
                )
            closing.set()

    writer = threading.Thread(target=write_then_close)
    writer.start()
    assert closing.wait(30)
    time.sleep(0.02)  # inside the close
    assert Store(path).count(Server) == 0
    writer.join()
    with Store(path).connect(read_only=True) as con:
        assert con.execute("SELECT count(*) FROM scratch").fetchone() == (300_000,)
