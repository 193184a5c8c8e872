"""An export's rows on their way to the files: staged on disk as the batches finish, then
sampled (the paper mix), ordered and read back in chunks, so the export never holds all its
rows in memory (issue 14: flat memory whatever the row count).

`RowSpill` keeps them in a scratch DuckDB database of its own (a temporary folder removed on
close; never the store), under a memory limit: the rows are ordered by sorting their narrow
keys, then copied a key range at a time into a table in final order. `ExportRows` is that
table read in chunks: every format writer and the card's counts iterate it, each once.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pyarrow as pa

from tasks.export import EXPORT_COLUMNS, SUBSETS, ExportRow

# DuckDB's working memory for the spill. It never orders all the rows at once (DuckDB 2.0
# cannot spill a sort of wide rows: 100k rows of 3.5 KB needed 512 MB): only their narrow
# sort keys, then the rows a key range of READ_CHUNK at a time
SPILL_MEMORY = "64MB"
READ_CHUNK = 2_000  # rows read back (and ordered) at a time
LAST_KEY = "~"  # after every sort key (they start with two digits)
COLUMNS = ", ".join(EXPORT_COLUMNS)


def mix_rank(seed: int, uuid: str) -> str:
    """The order the paper mix samples a subset's rows in: smallest first."""
    return hashlib.sha256(f"{seed}:{uuid}".encode()).hexdigest()


def sort_key(row: ExportRow) -> str:
    """The rows' order as one string: subset (SUBSETS order), then uuid (all of one length)."""
    return f"{SUBSETS.index(row.subset_name):02d}{row.uuid}"


class ExportRows:
    """The final rows of an export, in order (subset, then uuid): `len()` and iteration, read
    in chunks from a table written in that order; each iteration reads them afresh."""

    def __init__(self, con: duckdb.DuckDBPyConnection, table: str, count: int) -> None:
        self._con, self._table, self._count = con, table, count

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[ExportRow]:
        cursor = self._con.cursor()
        try:
            # a plain scan keeps the table's insertion order (DuckDB preserve_insertion_order)
            cursor.execute(f"SELECT {COLUMNS} FROM {self._table}")
            while chunk := cursor.fetchmany(READ_CHUNK):
                for values in chunk:
                    yield ExportRow.model_construct(
                        **dict(zip(EXPORT_COLUMNS, values, strict=True))
                    )
        finally:
            cursor.close()


class RowSpill:
    """Rows staged in a scratch database as batches finish (`add`), then sampled and read back
    in order (`finish`). Close it (or use it as a context manager) to remove its folder."""

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self._folder = tempfile.TemporaryDirectory(prefix="toucan-export-")
        folder = Path(self._folder.name)
        self._con = duckdb.connect(str(folder / "rows.duckdb"))
        self._con.execute(f"SET memory_limit = '{SPILL_MEMORY}'")
        self._con.execute(f"SET temp_directory = '{folder / 'tmp'}'")
        columns = ", ".join(f"{name} VARCHAR" for name in EXPORT_COLUMNS)
        self._con.execute(f"CREATE TABLE staged (sort_key VARCHAR, rank VARCHAR, {columns})")

    def add(self, rows: list[ExportRow]) -> None:
        """Stage one batch's rows."""
        if not rows:
            return
        columns = {
            "sort_key": [sort_key(row) for row in rows],
            "rank": [mix_rank(self.seed, row.uuid) for row in rows],
        }
        columns |= {name: [getattr(row, name) for row in rows] for name in EXPORT_COLUMNS}
        batch = pa.table(columns)  # noqa: F841 (read by name in the SQL below)
        self._con.execute("INSERT INTO staged SELECT * FROM batch")

    def counts(self) -> dict[str, int]:
        """Rows staged per subset."""
        rows = self._con.execute(
            "SELECT subset_name, count(*) FROM staged GROUP BY subset_name"
        ).fetchall()
        return dict(rows)

    def finish(self, quotas: dict[str, int] | None = None) -> ExportRows:
        """The final rows: with `quotas` (subset -> rows; a subset not named gets none), each
        subset's rows of smallest `mix_rank` only; ordered by subset (SUBSETS order), then
        uuid."""
        if quotas is not None:
            self._con.execute("CREATE TABLE quotas (subset_name VARCHAR, quota INTEGER)")
            self._con.executemany("INSERT INTO quotas VALUES (?, ?)", list(quotas.items()))
            self._con.execute(
                "DELETE FROM staged WHERE sort_key NOT IN (SELECT sort_key FROM staged "
                "JOIN quotas USING (subset_name) "
                "QUALIFY row_number() OVER (PARTITION BY subset_name ORDER BY rank) <= quota)"
            )
        bounds = self._con.execute(
            "SELECT sort_key FROM (SELECT sort_key, row_number() OVER (ORDER BY sort_key) AS n "
            f"FROM staged) WHERE n % {READ_CHUNK} = 0 ORDER BY sort_key"
        ).fetchall()
        # the ordered copy, a key range of READ_CHUNK rows at a time: each range is found by
        # a scan of the keys alone (the filter is pushed into the scan) and ordered in memory
        self._con.execute("CREATE TABLE final AS SELECT * FROM staged LIMIT 0")
        lows, highs = ["", *(key for (key,) in bounds)], [*(key for (key,) in bounds), LAST_KEY]
        for low, high in zip(lows, highs, strict=True):
            self._con.execute(
                "INSERT INTO final SELECT * FROM staged WHERE sort_key > ? AND sort_key <= ? "
                "ORDER BY sort_key",
                [low, high],
            )
        self._con.execute("DROP TABLE staged")
        count = self._con.execute("SELECT count(*) FROM final").fetchone()
        return ExportRows(self._con, "final", int(count[0]) if count else 0)

    def close(self) -> None:
        self._con.close()
        self._folder.cleanup()

    def __enter__(self) -> RowSpill:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
