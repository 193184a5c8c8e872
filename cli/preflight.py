"""What a stage command checks before Prefect starts: the settings load, and the store is a
DuckDB file that opens (or can be created). A bad key or a truncated store then fails in
about a second, with one line, and nothing is started or created."""

from __future__ import annotations

from pathlib import Path

import duckdb

from toucan.config import Settings, load_settings
from toucan.errors import StoreError
from toucan.store import Store

# a DuckDB file is its main header and two database headers (4 KiB each), then the blocks
HEADER_BYTES = 3 * 4096


def check_before_start(store: Path | None, config: Path | None, profile: str | None) -> None:
    """Raise ConfigError or StoreError now rather than from inside a flow run."""
    settings = load_settings(config, profile=profile)
    check_stage_names(settings)
    check_store_file(Store(store or settings.store).path)


def check_stage_names(settings: Settings) -> None:
    """Stage names in the settings (budget caps) name registered stages (ConfigError)."""
    if settings.budget.per_stage:  # the registry loads every stage: only when caps name one
        from flows.registry import check_settings

        check_settings(settings)


def check_store_file(path: Path) -> None:
    """An existing store must be a file DuckDB opens, lists the tables of and holds every
    block of; a new one must be creatable (its nearest existing parent a folder). Raises
    StoreError, having changed nothing (a read-write open would extend a cut file)."""
    if not path.exists():
        parent = next(p for p in path.absolute().parents if p.exists())
        if not parent.is_dir():
            raise StoreError(f"cannot create store {path}: {parent} is not a folder")
        return
    if not path.is_file():
        raise StoreError(f"store {path} is not a file")
    try:
        with Store(path).connect(read_only=True) as con:
            con.execute("SELECT count(*) FROM duckdb_tables()").fetchall()
            block_size, blocks, free = con.execute(
                "SELECT block_size, total_blocks, free_blocks FROM pragma_database_size() "
                "WHERE database_name = current_database()"  # not the in-memory one beside it
            ).fetchone() or (0, 0, 0)
    except duckdb.Error as exc:
        raise StoreError(f"cannot read store {path}: {exc}") from exc
    # DuckDB cuts free blocks off the end of the file at a checkpoint while still counting them
    # in total_blocks (a table dropped, then a checkpoint), so only a file missing more than its
    # free blocks is surely cut; a cut that small is met by the first query that reads there
    expected = HEADER_BYTES + block_size * (blocks - free)
    # blocks the write-ahead log adds are not in the file yet: no verdict while there is one
    if path.stat().st_size < expected and not Path(f"{path}.wal").exists():
        raise StoreError(
            f"store {path} is cut short: {path.stat().st_size} of at least {expected} bytes "
            "(a copy that did not finish, or a full disk?)"
        )
