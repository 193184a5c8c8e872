"""The export formats: name -> the writer of that format's files in an export folder.

Adding a format is a writer (rows, export folder, rows per shard -> the files written) and one
line in FORMATS; `toucan export --format` and the export stage accept exactly these names.
Writers take already-scrubbed rows (a sized iterable, read from the export's spill in chunks:
iterate it once, do not index it) and never read the store.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Any

from tasks.chat_formats import to_openai_chat, to_sharegpt_hermes
from tasks.export import ExportRow
from tasks.export_files import write_jsonl, write_parquet
from toucan.config import check_names

FormatWriter = Callable[[Collection[ExportRow], Path, int], list[Path]]
ChatConverter = Callable[[list[dict[str, Any]], list[dict[str, Any]]], dict[str, Any]]


def write_parquet_shards(rows: Collection[ExportRow], out_dir: Path, shard_rows: int) -> list[Path]:
    """`data/train-*.parquet`: the Toucan-1.5M columns, the dataset card's default config."""
    return write_parquet(rows, out_dir / "data", shard_rows)


def write_jsonl_shards(rows: Collection[ExportRow], out_dir: Path, shard_rows: int) -> list[Path]:
    """`data/train-*.jsonl`: the same columns, one JSON object a line."""
    lines = (row.model_dump() for row in rows)
    return write_jsonl(lines, len(rows), out_dir / "data", shard_rows)


def chat_writer(folder: str, convert: ChatConverter) -> FormatWriter:
    """A trainer chat format: `<folder>/train-*.jsonl`, each row's messages and tools made by
    `convert` (tasks/chat_formats.py), with its uuid and subset."""

    def write(rows: Collection[ExportRow], out_dir: Path, shard_rows: int) -> list[Path]:
        lines = (
            {
                "uuid": row.uuid,
                "subset_name": row.subset_name,
                **convert(json.loads(row.messages), json.loads(row.available_tools)),
            }
            for row in rows
        )
        return write_jsonl(lines, len(rows), out_dir / folder, shard_rows)

    return write


FORMATS: dict[str, FormatWriter] = {
    "parquet": write_parquet_shards,
    "jsonl": write_jsonl_shards,
    "openai": chat_writer("openai", to_openai_chat),
    "sharegpt": chat_writer("sharegpt", to_sharegpt_hermes),
}


def check_formats(names: Sequence[str]) -> list[str]:
    """`names` without repeats, in order, once each is known to be a format. Raises
    ConfigError (`unknown_export_format`) naming every unknown one: a name is never sent to
    another format's writer."""
    return check_names(names, FORMATS, "export format", "unknown_export_format")


def write_formats(
    rows: Collection[ExportRow], out_dir: Path, formats: list[str], shard_rows: int
) -> list[Path]:
    """Every file of the chosen formats, in their order. Raises KeyError for a name not in
    FORMATS (callers check the names first: `check_formats`)."""
    return [path for name in formats for path in FORMATS[name](rows, out_dir, shard_rows)]
