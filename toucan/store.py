"""The DuckDB store: one file, schema derived from the records, versioned migrations.

DuckDB allows one process to hold a file open for writing. Connections are therefore short,
so `toucan status` in another process can read between batches. Opening and closing the file
costs 25-50 ms on a small store (the close checkpoints) and far more on a large one: the first
write of a connection loads each touched table's primary-key index, ~0.4 s per 1M rows. So a
writing run holds one connection for its reads and writes (`Store.holding`) and lets go of it
when another process asks for the file: a process kept out by the lock touches
`<store>.knock` (`_open`), and the holder closes within KNOCK_CHECK_S or after its current
use. It also lets go once idle for HOLD_IDLE_S or open for HOLD_MAX_S (readers that do not
knock, such as the duckdb shell, wait at most that long).
Each process attaches the file once to an in-memory DuckDB (`_Attachment`, shared by its
threads and connections) so that it can set ROW_GROUP_ROWS, an option of ATTACH only.
Who may write at all is decided by a separate writer lock (`<store>.lock`, flock): a second run
on the same store refuses with StoreLocked instead of interleaving its writes with the first.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import threading
import time
import types
import typing
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import duckdb
import orjson
import polars as pl
from pydantic import BaseModel

from toucan.errors import ConfigError, StoreError, StoreLocked
from toucan.interrupts import uninterrupted
from toucan.records import TABLES, Record, utc_now

R = TypeVar("R", bound=Record)

DEFAULT_STORE = Path("data/toucan.duckdb")
LOCK_WAIT_S = 30.0  # a reader holds the file for milliseconds; 30 s means something is stuck
HOLD_IDLE_S = 1.0  # a held connection unused this long is closed: the file is free in lulls
HOLD_MAX_S = 20.0  # and closed after its next use once it has been open this long
KNOCK_CHECK_S = 0.1  # how often the holder looks for a knock when it is not in use
# after that close the file stays free this long before the writer opens it again: a writer
# busy without pause (replies stored as they come, flows/durable.py) would otherwise reopen it
# at once, and a reader in another process (polling every 50 ms in _open) might never get in
HOLD_YIELD_S = 0.15
# Rows per DuckDB row group in the store (DuckDB's default: 122,880), which bounds what a
# checkpoint holds in memory. A checkpoint compresses a table's last row group whole once it
# fills (~170 MB jumps at the default, llm_cache's ~1 KB rows; bench/bench_row_groups.py); and
# since each checkpoint (every held-connection close) leaves a table's new rows in a row group
# of their own, DuckDB's vacuum keeps merging neighbours that fit in fewer, re-writing up to 3
# row groups at once (its MAX_MERGE_COUNT): at 16,384 rows that was 280 MB for 2 KB rows and
# 800 MB for 6 KB ones, the trajectories stage's 100k peak. At 4,096 it is 80 / 220 MB, and
# the file of wide rows is smaller; narrow tables pay +26% file and +40% scan time at 1M rows
# (bench/bench_vacuum.py, docs/scale.md). A multiple of DuckDB's vector size (2,048).
ROW_GROUP_ROWS = 4_096
# An optional cap on DuckDB's memory (TOUCAN_STORE_MEMORY_LIMIT, e.g. `2GB`); unset, DuckDB's
# own default (80% of RAM). No cap by default, measured (bench/bench_scale.py, docs/scale.md):
# DuckDB's part of a run's memory is not the buffer pool (a held connection closes every
# HOLD_MAX_S, dropping what its scans read) but the primary-key indexes (ART) a write loads,
# ~70 MB per 1M rows of each table written to, which DuckDB cannot evict: under a cap smaller
# than them an insert fails with OutOfMemoryException. Over the cap, DuckDB evicts read blocks
# and spills sorts, joins and aggregates to `<store>.tmp`.
MEMORY_LIMIT_ENV = "TOUCAN_STORE_MEMORY_LIMIT"
_MEMORY_SIZE = re.compile(r"\s*\d+(\.\d+)?\s*([KMGT]i?B|B)\s*", re.IGNORECASE)


def store_memory_limit() -> str | None:
    """DuckDB's memory_limit for the store's connections: TOUCAN_STORE_MEMORY_LIMIT (a size
    such as `512MB` or `2GiB`), else None (DuckDB's default). Raises ConfigError (bad_config)
    for a value that is not a size."""
    value = os.environ.get(MEMORY_LIMIT_ENV)
    if not value:
        return None
    if not _MEMORY_SIZE.fullmatch(value):
        raise ConfigError(
            f"{MEMORY_LIMIT_ENV}={value!r} is not a size: give a number and a unit "
            "(B, KB, MB, GB, TB or KiB, MiB, GiB, TiB), e.g. 2GB"
        )
    return value.strip()


def among(column: str, param: str = "?") -> str:
    """SQL condition: `column` (VARCHAR) is one of the ids of a VARCHAR[] parameter (`param`:
    `?`, or `$n` in a query of numbered parameters), as a semi-join: the ids are hashed once
    and the column scanned once. Not `list_contains(?, column)`, which DuckDB 2.0 plans as a
    mark join over the table and which loads the table's whole key index (ART): +36 MB for
    1M tasks, kept for the connection's life, for 1,000 ids in 22 ms against 28 ms once
    loaded (bench/bench_key_lookup.py). Where a run's writes load that index anyway, or a
    zone-map range narrows the scan, measure both (flows/queries.py `select_walked`)."""
    return f'"{column}" IN (SELECT unnest({param}::VARCHAR[]))'


def resolve_store_path(cli_value: str | Path | None = None) -> Path:
    """--store wins, then TOUCAN_STORE, then ./data/toucan.duckdb."""
    if cli_value:
        return Path(cli_value)
    if env := os.environ.get("TOUCAN_STORE"):
        return Path(env)
    return DEFAULT_STORE


def _duckdb_type(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _duckdb_type(inner[0]) if len(inner) == 1 else "JSON"
    if origin is typing.Literal:
        return "VARCHAR"
    if annotation is bool:
        return "BOOLEAN"
    if annotation is int:
        return "BIGINT"
    if annotation is float:
        return "DOUBLE"
    if annotation is str:
        return "VARCHAR"
    if annotation is datetime:
        return "TIMESTAMP"
    if origin is list and typing.get_args(annotation) == (int,):
        return "BIGINT[]"  # a native list: SQL can unnest and join it (e.g. LSH band keys)
    return "JSON"


def table_columns(model: type[Record]) -> dict[str, str]:
    """Column name -> DuckDB type, derived from the record's fields."""
    return {name: _duckdb_type(f.annotation) for name, f in model.model_fields.items()}


def create_table_sql(model: type[Record]) -> str:
    """The table of a record: its columns, and its primary key unless the record is not
    `__indexed__` (an append-only table, toucan/records.py)."""
    cols = ", ".join(f'"{n}" {t}' for n, t in table_columns(model).items())
    if not model.__indexed__:
        return f"CREATE TABLE IF NOT EXISTS {model.__table__} ({cols})"
    key = ", ".join(f'"{k}"' for k in model.__key__)
    return f"CREATE TABLE IF NOT EXISTS {model.__table__} ({cols}, PRIMARY KEY ({key}))"


def _write_sql(model: type[Record], *, replace: bool, source: str) -> str:
    """The statement that writes `source`'s rows into the model's table: insert or replace by
    key, or insert skipping existing keys; into a table without a key index, a plain append
    (its writer makes each row once) where nothing is replaced. StoreError for a replace
    there, which DuckDB could only do by scanning the table."""
    table = model.__table__
    if model.__indexed__:
        verb = "INSERT OR REPLACE" if replace else "INSERT"
        conflict = "" if replace else " ON CONFLICT DO NOTHING"
        return f"{verb} INTO {table} BY NAME SELECT * FROM {source}{conflict}"
    if replace:
        raise StoreError(f"{table} is append-only (no key index): its rows are never replaced")
    return f"INSERT INTO {table} BY NAME SELECT * FROM {source}"


def _drop_key_indexes(con: duckdb.DuckDBPyConnection) -> None:
    """Stores made before `__indexed__` (toucan/records.py) hold primary keys on the
    append-only tables: rebuild those tables without one (DuckDB cannot drop a constraint),
    same columns in the same order, same rows."""
    for model in TABLES:
        if model.__indexed__:
            continue
        keyed = con.execute(
            "SELECT count(*) FROM duckdb_constraints() "
            "WHERE table_name = ? AND constraint_type = 'PRIMARY KEY'",
            [model.__table__],
        ).fetchone()
        if not keyed or not keyed[0]:
            continue
        table = model.__table__
        con.execute(f"CREATE TABLE {table}__rebuilt AS SELECT * FROM {table}")
        con.execute(f"DROP TABLE {table}")
        con.execute(f"ALTER TABLE {table}__rebuilt RENAME TO {table}")


def _create_all_tables(con: duckdb.DuckDBPyConnection) -> None:
    for model in TABLES:
        con.execute(create_table_sql(model))


# the tasks.metadata keys that became Task fields (tokens_in/out: `usage`), with their types
ACCOUNTING_KEYS = {
    "deployment": "VARCHAR",
    "tokens_in": "BIGINT",
    "tokens_out": "BIGINT",
    "cost_usd": "DOUBLE",
    "cached": "BOOLEAN",
}


def _move_task_accounting(con: duckdb.DuckDBPyConnection) -> None:
    """Stores older than `Task.deployment/usage/cost_usd/cached` held them in the metadata
    (toucan/records.py): copy them into the columns and drop the keys. A value that does not
    convert (a token count that is not a number) stays in the metadata, lost nowhere."""
    value = {
        key: f"TRY_CAST(json_extract_string(metadata, '$.{key}') AS {sql_type})"
        for key, sql_type in ACCOUNTING_KEYS.items()
    }
    prompt, completion = (f"coalesce({value[key]}, 0)" for key in ("tokens_in", "tokens_out"))
    # JSON merge patch (RFC 7396): null removes a key; a key that did not convert keeps itself
    patch = ", ".join(
        f"'{key}', CASE WHEN {value[key]} IS NULL THEN json_extract(metadata, '$.{key}') END"
        for key in ACCOUNTING_KEYS
    )
    present = " OR ".join(f"json_exists(metadata, '$.{key}')" for key in ACCOUNTING_KEYS)
    con.execute(
        f"""UPDATE tasks SET
            deployment = coalesce({value["deployment"]}, deployment),
            usage = json_object('prompt_tokens', {prompt}, 'completion_tokens', {completion},
                'server_request_tokens', 0, 'total_tokens', {prompt} + {completion}),
            cost_usd = coalesce({value["cost_usd"]}, cost_usd),
            cached = coalesce({value["cached"]}, cached),
            metadata = json_merge_patch(metadata, json_object({patch}))
        WHERE {present}"""
    )


# Explicit, ordered migrations, known by their description: the additive step records its
# column additions in the same version sequence, so a version number fixed here could
# already be taken in an older store. Each runs once, after the additive step (every
# column the records declare exists by then).
MIGRATIONS: list[tuple[str, typing.Callable[[duckdb.DuckDBPyConnection], None]]] = [
    ("create tables from records", _create_all_tables),
    ("move task accounting from metadata into columns", _move_task_accounting),
    ("drop the primary keys of append-only tables", _drop_key_indexes),
]


def _to_cell(value: Any, column_type: str) -> Any:
    if value is None:
        return None
    if column_type == "JSON":
        # orjson: trajectories carry whole conversations, and json.dumps was most of a write
        return orjson.dumps(value, default=_jsonable, option=orjson.OPT_NON_STR_KEYS).decode()
    return value


def _default_for_existing_rows(model: type[Record], name: str, column_type: str) -> Any:
    """What the rows already in a table get in a column added for a new field: the field's
    default, so a field that cannot be None (a list, say) reads back; NULL would fail
    validation. None for fields without a fixed default (timestamps made at creation)."""
    default = model.model_fields[name].get_default(call_default_factory=True)
    if default is None or isinstance(default, datetime):
        return None
    return _to_cell(default, column_type)


def _jsonable(value: Any) -> Any:
    """What orjson cannot encode by itself: nested records, then anything as its str()."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    return str(value)


_POLARS_TYPES: dict[str, Any] = {
    "BOOLEAN": pl.Boolean,
    "BIGINT": pl.Int64,
    "DOUBLE": pl.Float64,
    "TIMESTAMP": pl.Datetime("us"),
    "BIGINT[]": pl.List(pl.Int64),
}


def _from_row(
    model: type[R], columns: list[str], types_by_col: dict[str, str], row: tuple[Any, ...]
) -> R:
    """One record from a row of `columns`; `types_by_col` is `table_columns(model)`, derived
    once per query by the caller (per row it was a third of an export chunk's read)."""
    values: dict[str, Any] = {}
    for col, cell in zip(columns, row, strict=True):
        if col not in types_by_col:
            continue
        if types_by_col[col] == "JSON" and isinstance(cell, str):
            cell = orjson.loads(cell)
        values[col] = cell
    return model.model_validate(values)


class _Attachment:
    """The store file attached to an in-memory DuckDB instance: one per file and process,
    shared by every connection this process opens to it, as DuckDB's own instance cache
    shared `duckdb.connect(path)` (two instances on one file in one process would be refused:
    DuckDB's "unique file handle conflict").

    Why attached, not opened: `ROW_GROUP_ROWS` is an option of ATTACH only (DuckDB 2.0; not
    stored in the file, not a connect setting)."""

    def __init__(self, key: Path, con: duckdb.DuckDBPyConnection, *, read_only: bool) -> None:
        self.key, self.read_only = key, read_only
        self._con = con
        self.users = 1

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """A connection of its own (its own results and transaction) on the store."""
        cursor = self._con.cursor()
        cursor.execute(f"USE {_CATALOG}")  # USE is per connection; a cursor starts in memory
        return cursor

    def release(self) -> None:
        """One user fewer; the last one closes the instance (which checkpoints the file)."""
        with _ATTACHED_LOCK:
            self.users -= 1
            if self.users > 0:
                return
            del _ATTACHED[self.key]
            _CLOSING.add(self.key)
        # outside the lock: a close checkpoints (seconds at 1M rows), and other files' opens
        # need not wait for it; this file's do (`_open`), since DuckDB refuses a second
        # attachment while the first is closing ("unique file handle conflict")
        try:
            self._con.close()
        finally:
            with _ATTACHED_LOCK:
                _CLOSING.discard(self.key)


_ATTACHED: dict[Path, _Attachment] = {}
_CLOSING: set[Path] = set()  # files whose last attachment is being closed
_ATTACHED_LOCK = threading.Lock()
_CATALOG = "store"


def _open(path: Path, *, read_only: bool) -> _Attachment:
    """The file, attached with the memory cap (store_memory_limit) and small row groups
    (ROW_GROUP_ROWS), waiting while another process holds it briefly; shared with the
    connections this process has open to it (a read-only request may get a read-write one; a
    read-write request waits for this process's read-only ones to end). Release it with
    `.release()`. Raises StoreError (the file is held elsewhere, or here read-only, past
    LOCK_WAIT_S, or cannot be opened), or ConfigError for a bad TOUCAN_STORE_MEMORY_LIMIT."""
    key = path.resolve()
    limit = store_memory_limit()
    deadline = time.monotonic() + LOCK_WAIT_S
    while True:
        with _ATTACHED_LOCK:
            shared = _ATTACHED.get(key)
            if shared is not None and (read_only or not shared.read_only):
                shared.users += 1
                return shared
            if shared is None and key not in _CLOSING:
                try:
                    con = _attach(key, read_only=read_only, memory_limit=limit)
                except duckdb.IOException as exc:
                    if "lock" not in str(exc).lower() or time.monotonic() > deadline:
                        raise StoreError(f"cannot open store {path}: {exc}") from exc
                    _knock(path)
                except duckdb.ResourceInUseException as exc:  # a plain duckdb.connect here
                    raise StoreError(f"cannot open store {path}: {exc}") from exc
                else:
                    attachment = _ATTACHED[key] = _Attachment(key, con, read_only=read_only)
                    return attachment
            elif shared is not None and time.monotonic() > deadline:  # a write waits for reads
                raise StoreError(
                    f"cannot write to store {path}: this process has held it open "
                    f"read-only for {LOCK_WAIT_S:.0f} s"
                )
        # else another thread is closing this file's attachment (a close checkpoints), and
        # DuckDB refuses a second one until it has: wait for it
        time.sleep(0.05)


def _attach(path: Path, *, read_only: bool, memory_limit: str | None) -> duckdb.DuckDBPyConnection:
    # the spill folder DuckDB gives a file it opens itself; in memory it would be ./.tmp
    config = {"temp_directory": f"{path}.tmp"}
    if memory_limit:
        config["memory_limit"] = memory_limit
    con = duckdb.connect(config=config)
    try:
        options = f"ROW_GROUP_SIZE {ROW_GROUP_ROWS}" + (", READ_ONLY" if read_only else "")
        quoted = str(path).replace("'", "''")
        con.execute(f"ATTACH '{quoted}' AS {_CATALOG} ({options})")
        con.execute(f"USE {_CATALOG}")
        # DuckDB draws its own progress bar on stdout for queries over ~2 s (the dedup pass
        # over a million tasks has some); the CLI has its own progress display
        con.execute("SET enable_progress_bar = false")
    except BaseException:
        con.close()
        raise
    return con


def knock_path(path: Path) -> Path:
    """The file a process kept out of the store touches to ask its holder to let go."""
    return path.with_name(path.name + ".knock")


def _knock(path: Path) -> None:
    with contextlib.suppress(OSError):  # a read-only folder: the holder's timeouts still free it
        knock_path(path).touch()


def _knocked_since(path: Path, since_ns: int) -> bool:
    """Whether a process touched the store's knock file at or after `since_ns` (wall clock,
    ns; at, not after: a knock in the same clock tick as the open is taken as one)."""
    try:
        return knock_path(path).stat().st_mtime_ns >= since_ns
    except OSError:
        return False


class _HeldConnection:
    """The one read-write connection this process keeps to a file while a run writes to it.

    Every Store on the same path in the process shares it (DuckDB refuses a read-only and a
    read-write connection to one file in one process). Uses are serialized by a lock; a reaper
    thread closes the connection when another process knocks or once idle, so the file is free
    when someone asks for it and between bursts of work."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock = threading.RLock()
        self.holders = 0
        self._con: _Attachment | None = None
        self._opened = 0.0
        self._opened_ns = 0  # wall clock, to compare with the knock file's mtime
        self._last_used = 0.0
        self._free_until = 0.0  # monotonic time before which the writer leaves the file free
        self._stop = threading.Event()
        self._reaper: threading.Thread | None = None

    @contextlib.contextmanager
    def use(self) -> Iterator[duckdb.DuckDBPyConnection]:
        with self.lock:
            if self._con is None:
                if (wait := self._free_until - time.monotonic()) > 0:
                    time.sleep(wait)
                self._con = _open(self.path, read_only=False)
                self._opened, self._opened_ns = time.monotonic(), time.time_ns()
            cursor = self._con.cursor()  # its own results: a use never sees another's leftovers
            try:
                yield cursor
            finally:
                cursor.close()
                self._last_used = time.monotonic()
                if self._last_used - self._opened > HOLD_MAX_S or self._knocked():
                    self._yield_file()

    def start(self) -> None:
        self._stop.clear()
        self._reaper = threading.Thread(
            target=self._reap, name=f"store-reaper:{self.path.name}", daemon=True
        )
        self._reaper.start()

    def stop(self) -> None:
        self._stop.set()
        if self._reaper is not None:
            self._reaper.join()
        with self.lock:
            self._close()

    def _reap(self) -> None:
        while not self._stop.wait(KNOCK_CHECK_S):
            with self.lock:
                if self._con is None:
                    continue
                if self._knocked():
                    self._yield_file()
                elif time.monotonic() - self._last_used > HOLD_IDLE_S:
                    self._close()

    def _knocked(self) -> bool:
        return self._con is not None and _knocked_since(self.path, self._opened_ns)

    def _yield_file(self) -> None:
        """Close, and leave the file free a moment: a writer busy without pause would
        otherwise reopen it before the process waiting for it (polling every 50 ms) gets in."""
        self._close()
        self._free_until = time.monotonic() + HOLD_YIELD_S

    def _close(self) -> None:
        if self._con is not None:
            self._con.release()
            self._con = None


_HELD: dict[Path, _HeldConnection] = {}
_HELD_LOCK = threading.Lock()


class Store:
    """Handle on one DuckDB file. Cheap to create; opens connections only while working."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = resolve_store_path(path)
        self._migrated = False
        self._reader: _Attachment | None = None  # set inside `reading()`

    # -- connections -------------------------------------------------------------------

    @contextlib.contextmanager
    def connect(self, *, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """A short-lived connection, or the held one while this process runs a writer."""
        if read_only and not self.path.exists():
            raise StoreError(f"no store at {self.path}: run `toucan onboard` first")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        held = _HELD.get(self.path.resolve())
        if held is not None:
            with held.use() as con:
                if not self._migrated:
                    self._migrate(con)
                yield con
            return
        if read_only and self._reader is not None:
            cursor = self._reader.cursor()
            try:
                yield cursor
            finally:
                cursor.close()
            return
        attachment = _open(self.path, read_only=read_only)
        try:
            con = attachment.cursor()
            try:
                if not read_only and not self._migrated:
                    self._migrate(con)
                yield con
            finally:
                con.close()
        finally:
            attachment.release()

    @contextlib.contextmanager
    def holding(self) -> Iterator[None]:
        """Keep one connection open across this block's reads and writes (released when idle);
        for a run that writes many small batches. Nests, and is shared by every Store on the
        same path in this process."""
        key = self.path.resolve()
        with _HELD_LOCK:
            held = _HELD.get(key)
            if held is None:
                held = _HELD[key] = _HeldConnection(key)
                held.start()
            held.holders += 1
        try:
            yield
        finally:
            with _HELD_LOCK:
                held.holders -= 1
                if held.holders == 0:
                    del _HELD[key]
                    held.stop()

    @contextlib.contextmanager
    def reading(self) -> Iterator[None]:
        """Serve this block's read-only reads from one connection: a reader that makes several
        queries at once (`toucan status`) opens the file once, not once per query (25-70 ms
        each). Where this process holds the file for a writing run, or there is no file yet,
        reads go on as without it. Keep the block short: a writer elsewhere waits for it."""
        if self._reader is not None or not self.path.exists() or self.path.resolve() in _HELD:
            yield
            return
        self._reader = _open(self.path, read_only=True)
        try:
            yield
        finally:
            reader, self._reader = self._reader, None
            reader.release()

    def ensure_schema(self) -> None:
        with self.connect():
            pass

    def _migrate(self, con: duckdb.DuckDBPyConnection) -> None:
        con.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            "version INTEGER PRIMARY KEY, description VARCHAR, applied_at TIMESTAMP)"
        )
        applied = {
            r[0] for r in con.execute("SELECT description FROM schema_migrations").fetchall()
        }
        _create_all_tables(con)  # a new store, or tables added to TABLES since
        self._add_missing_columns(con)
        for description, apply in MIGRATIONS:
            if description in applied:
                continue
            con.execute("BEGIN TRANSACTION")
            apply(con)
            _record_migration(con, description)
            con.execute("COMMIT")
        self._migrated = True

    def _add_missing_columns(self, con: duckdb.DuckDBPyConnection) -> None:
        for model in TABLES:
            existing = {
                r[0]
                for r in con.execute(
                    "SELECT column_name FROM information_schema.columns WHERE table_name = ?",
                    [model.__table__],
                ).fetchall()
            }
            for name, col_type in table_columns(model).items():
                if name in existing:
                    continue
                con.execute(f'ALTER TABLE {model.__table__} ADD COLUMN "{name}" {col_type}')
                fill = _default_for_existing_rows(model, name, col_type)
                if fill is not None:
                    con.execute(f'UPDATE {model.__table__} SET "{name}" = ?', [fill])
                _record_migration(con, f"add column {model.__table__}.{name}")

    def schema_version(self) -> int:
        with self.connect() as con:
            row = con.execute("SELECT max(version) FROM schema_migrations").fetchone()
        return int(row[0]) if row and row[0] is not None else 0

    # -- writes ------------------------------------------------------------------------

    def insert(self, records: Sequence[Record]) -> int:
        """Insert records, skipping any whose key already exists (into an append-only table,
        one not `__indexed__`, appending them: its writer makes each row once). Returns rows
        added."""
        return self._write(records, replace=False)

    def upsert(self, records: Sequence[Record]) -> int:
        """Insert or replace by key: for rows whose state legitimately changes (runs, servers).
        StoreError for records of an append-only table."""
        return self._write(records, replace=True)

    def insert_frame(self, model: type[Record], frame: pl.DataFrame) -> int:
        """Bulk insert of rows computed as columns (e.g. a million dedup index rows, where one
        pydantic object per row would cost more than the work): the frame's columns must be
        exactly the record's fields (StoreError otherwise); existing keys are skipped, in an
        append-only table by an anti-join on the key (one scan of its key column a call)."""
        if set(frame.columns) != set(table_columns(model)):
            raise StoreError(
                f"frame columns {sorted(frame.columns)} are not the fields of {model.__name__}"
            )
        table = model.__table__
        with self.connect() as con, uninterrupted():
            con.register("frame_rows", frame)
            try:
                count = f"SELECT count(*) FROM {table}"
                before = con.execute(count).fetchall()[0][0]
                source = "frame_rows"
                if not model.__indexed__:
                    same = " AND ".join(f'f."{k}" = t."{k}"' for k in model.__key__)
                    source = (
                        f"(SELECT * FROM frame_rows f WHERE NOT EXISTS "
                        f"(SELECT 1 FROM {table} t WHERE {same}))"
                    )
                con.execute(_write_sql(model, replace=False, source=source)).fetchall()
                after = con.execute(count).fetchall()[0][0]
            finally:
                con.unregister("frame_rows")
        return int(after - before)

    def update_frame(self, model: type[Record], frame: pl.DataFrame) -> None:
        """Set the frame's other columns on the rows with its keys (e.g. a hundred thousand
        near-duplicate rejections, where reading each row as a record and writing it back
        cost more than the decision). The frame holds the record's key and some of its other
        fields, as their cells (JSON as text); StoreError otherwise. An indexed table only."""
        columns = table_columns(model)
        keys = set(model.__key__)
        if not keys <= set(frame.columns) <= set(columns) or not model.__indexed__:
            raise StoreError(
                f"frame columns {sorted(frame.columns)} cannot update {model.__name__}"
            )
        assigned = ", ".join(f'"{name}" = f."{name}"' for name in frame.columns if name not in keys)
        same = " AND ".join(f't."{k}" = f."{k}"' for k in model.__key__)
        with self.connect() as con, uninterrupted():
            con.register("frame_rows", frame)
            try:
                con.execute(
                    f"UPDATE {model.__table__} t SET {assigned} FROM frame_rows f WHERE {same}"
                )
            finally:
                con.unregister("frame_rows")

    def _write(self, records: Sequence[Record], *, replace: bool) -> int:
        if not records:
            return 0
        by_type: dict[type[Record], list[Record]] = {}
        for record in records:
            by_type.setdefault(type(record), []).append(record)
        written = 0
        with self.connect() as con, uninterrupted():
            con.execute("BEGIN TRANSACTION")
            try:
                for model, rows in by_type.items():
                    written += self._write_batch(con, model, rows, replace=replace)
                con.execute("COMMIT")
            except Exception:
                with contextlib.suppress(duckdb.Error):  # already ended: keep the first error
                    con.execute("ROLLBACK")
                raise
        return written

    @staticmethod
    def _write_batch(
        con: duckdb.DuckDBPyConnection, model: type[Record], rows: list[Record], *, replace: bool
    ) -> int:
        columns = table_columns(model)
        seen: dict[tuple[Any, ...], Record] = {}
        for r in rows:  # a batch must not hold the same key twice; the first one wins
            seen.setdefault(tuple(getattr(r, k) for k in model.__key__), r)
        data = {
            name: [_to_cell(getattr(r, name), col_type) for r in seen.values()]
            for name, col_type in columns.items()
        }
        schema = {name: _POLARS_TYPES.get(t, pl.Utf8) for name, t in columns.items()}
        batch = pl.DataFrame(data, schema=schema)  # noqa: F841 - read by name in the SQL
        before = con.execute(f"SELECT count(*) FROM {model.__table__}").fetchone()[0]  # type: ignore[index]
        con.execute(_write_sql(model, replace=replace, source="batch"))
        after = con.execute(f"SELECT count(*) FROM {model.__table__}").fetchone()[0]  # type: ignore[index]
        return len(seen) if replace else int(after - before)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        """A write statement the record API does not cover (e.g. marking old tool versions)."""
        with self.connect() as con:
            con.execute(sql, list(params))

    # -- reads -------------------------------------------------------------------------

    def select(self, model: type[R], where: str = "", params: Sequence[Any] = ()) -> list[R]:
        if not self.path.exists():
            return []
        sql = f"SELECT * FROM {model.__table__}" + (f" WHERE {where}" if where else "")
        with self.connect(read_only=True) as con:
            if not _has_table(con, model.__table__):
                return []
            cursor = con.execute(sql, list(params))
            columns = [d[0] for d in cursor.description]
            types_by_col = table_columns(model)
            return [_from_row(model, columns, types_by_col, row) for row in cursor.fetchall()]

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self.connect(read_only=True) as con:
            return con.execute(sql, list(params)).fetchall()

    def frame(
        self,
        sql: str,
        params: Sequence[Any] = (),
        frames: Mapping[str, pl.DataFrame] | None = None,
    ) -> pl.DataFrame:
        """Analytics read as a polars frame (Arrow, no copy); `frames` as in `query_with`."""
        with self.connect(read_only=True) as con, _registered(con, frames or {}):
            # duckdb 2.x: results of `execute` have no .pl(); a relation does
            return con.sql(sql, params=list(params) or None).pl()

    def query_with(
        self, sql: str, frames: Mapping[str, pl.DataFrame], params: Sequence[Any] = ()
    ) -> list[tuple[Any, ...]]:
        """A read that joins store tables with in-memory frames, each visible to the SQL under
        its key (e.g. probe keys against an index): no per-value parameter conversion."""
        with self.connect(read_only=True) as con, _registered(con, frames):
            return con.execute(sql, list(params)).fetchall()

    def count(self, model: type[Record], where: str = "", params: Sequence[Any] = ()) -> int:
        if not self.path.exists():
            return 0
        sql = f"SELECT count(*) FROM {model.__table__}" + (f" WHERE {where}" if where else "")
        with self.connect(read_only=True) as con:
            if not _has_table(con, model.__table__):
                return 0
            return int(con.execute(sql, list(params)).fetchone()[0])  # type: ignore[index]

    def existing_ids(self, model: type[Record], ids: Sequence[str]) -> set[str]:
        """Which of these keys already have a row: the anti-join that makes stages resumable."""
        if not ids or not self.path.exists():
            return set()
        key = model.__key__[0]
        with self.connect(read_only=True) as con:
            if not _has_table(con, model.__table__):
                return set()
            found = pl.DataFrame({"id": list(ids)})  # noqa: F841 - read by name in the SQL
            rows = con.execute(
                f'SELECT t."{key}" FROM {model.__table__} t JOIN found f ON t."{key}" = f.id'
            ).fetchall()
        return {r[0] for r in rows}

    # -- the writer lock ---------------------------------------------------------------

    @contextlib.contextmanager
    def writer_lock(self, run_id: str) -> Iterator[None]:
        """Held by a run for its whole life: one writing run per store at a time."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock_path = self.path.with_name(self.path.name + ".lock")
        handle = lock_path.open("a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise StoreLocked(
                f"another toucan run is writing to {self.path} ({holder}); "
                "wait for it to finish or use another --store"
            ) from exc
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}, run {run_id}")
        handle.flush()
        try:
            yield
        finally:
            handle.seek(0)
            handle.truncate()
            fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()


@contextlib.contextmanager
def _registered(
    con: duckdb.DuckDBPyConnection, frames: Mapping[str, pl.DataFrame]
) -> Iterator[None]:
    """The frames visible to this connection's SQL under their keys for the block."""
    for name, frame in frames.items():
        con.register(name, frame)
    try:
        yield
    finally:
        for name in frames:
            con.unregister(name)


def _record_migration(con: duckdb.DuckDBPyConnection, description: str) -> None:
    """One row in schema_migrations, under the next version number."""
    row = con.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchone()
    version = int(row[0]) + 1 if row else 1
    con.execute("INSERT INTO schema_migrations VALUES (?, ?, ?)", [version, description, utc_now()])


def _has_table(con: duckdb.DuckDBPyConnection, table: str) -> bool:
    row = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [table]
    ).fetchone()
    return bool(row and row[0])
