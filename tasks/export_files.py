"""Writing an export: parquet/JSONL shards and the dataset card (the formats built on these
shards are named in tasks/export_formats.py).

Every writer takes already-scrubbed `ExportRow`s, any sized iterable of them (the export's are
read from its spill in chunks: tasks/export_spill.py), and writes them as they come, so it
holds one chunk at a time; nothing here reads the store.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Collection, Iterable, Iterator
from itertools import islice
from pathlib import Path
from typing import Any, TypeVar

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, Field

from tasks.export import EXPORT_COLUMNS, SUBSETS, ExportRow
from tasks.export_provenance import ServedSummary, embedded_notice, served_rows, summarize_served

ARROW_SCHEMA = pa.schema([(name, pa.string()) for name in EXPORT_COLUMNS])
WRITE_CHUNK = 2_000  # rows a writer holds at once (a parquet row group)
T = TypeVar("T")


class ExportSummary(BaseModel):
    out_dir: str
    formats: list[str]
    mix: str = "none"
    candidates: int = 0
    rows: int = 0
    by_subset: dict[str, int] = Field(default_factory=dict)
    mix_plan: dict[str, int] = Field(default_factory=dict)
    excluded: dict[str, int] = Field(default_factory=dict)
    scrubbed: dict[str, int] = Field(default_factory=dict)  # kind -> replacements
    scrubbed_rows: dict[str, int] = Field(default_factory=dict)  # kind -> rows it was in
    rows_scrubbed: int = 0
    files: list[str] = Field(default_factory=list)
    teachers: dict[str, int] = Field(default_factory=dict)
    generators: dict[str, int] = Field(default_factory=dict)
    judges: list[str] = Field(default_factory=list)
    served: ServedSummary = Field(default_factory=ServedSummary)  # what actually served them
    servers: list[dict[str, Any]] = Field(default_factory=list)
    filters: dict[str, Any] = Field(default_factory=dict)
    message: str = ""
    # what the files were made from (flows/export.py): an export of the same key is not redone
    content_key: str = ""


SCRUB_NOTE = (
    "Every string of every row (messages, tool calls and results, tools, assessments, "
    "metadata) went through toucan's secret detector before writing: provider keys and "
    "tokens (detect-secrets' patterns and toucan's), JWTs, private keys, NAME=value secrets "
    "(by length and entropy), e-mails and local paths. Keys and tokens became `[REDACTED_...]` "
    "markers, e-mails `user@example.com`, and a local path's private prefix `/workspace` "
    "(system paths such as `/usr/bin` stay). Rows changed: {rows}."
)


def shard_slices(total: int, shard_rows: int) -> list[tuple[int, int]]:
    """(start, end) per shard; an empty export still gets one (empty) shard."""
    if total == 0:
        return [(0, 0)]
    return [(start, min(start + shard_rows, total)) for start in range(0, total, shard_rows)]


def shard_name(index: int, count: int, suffix: str) -> str:
    return f"train-{index:05d}-of-{count:05d}.{suffix}"


def shards(
    items: Iterable[T], total: int, shard_rows: int
) -> Iterator[tuple[int, int, Iterator[T]]]:
    """(index, shard count, its items) per shard of `total` items (`shard_slices`); each
    shard's items must be consumed before the next shard is asked for."""
    slices = shard_slices(total, shard_rows)
    iterator = iter(items)
    for index, (start, end) in enumerate(slices):
        yield index, len(slices), islice(iterator, end - start)


def chunks(items: Iterable[T], size: int = WRITE_CHUNK) -> Iterator[list[T]]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


def write_parquet(rows: Collection[ExportRow], folder: Path, shard_rows: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, count, shard in shards(rows, len(rows), shard_rows):
        path = folder / shard_name(index, count, "parquet")
        with pq.ParquetWriter(path, ARROW_SCHEMA, compression="zstd") as writer:
            for chunk in chunks(shard):
                columns = {name: [getattr(row, name) for row in chunk] for name in EXPORT_COLUMNS}
                writer.write_table(pa.table(columns, schema=ARROW_SCHEMA))
        paths.append(path)
    return paths


def write_jsonl(
    lines: Iterable[dict[str, Any]], total: int, folder: Path, shard_rows: int
) -> list[Path]:
    """`total` lines (as many as `lines` yields) in shards of `shard_rows`."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, count, shard in shards(lines, total, shard_rows):
        path = folder / shard_name(index, count, "jsonl")
        with path.open("w", encoding="utf-8") as handle:
            for line in shard:
                handle.write(json.dumps(line, ensure_ascii=False) + "\n")
        paths.append(path)
    return paths


def describe_rows(rows: Iterable[ExportRow], summary: ExportSummary) -> None:
    """Fill counts, models and servers of the summary from the final rows (one pass)."""
    by_subset: Counter[str] = Counter()
    teachers: Counter[str] = Counter()
    generators: Counter[str] = Counter()
    servers: dict[str, dict[str, Any]] = {}

    def read_metadata() -> Iterator[dict[str, Any]]:
        for row in rows:
            by_subset[row.subset_name] += 1
            meta = json.loads(row.metadata)
            teachers[meta.get("teacher") or "unknown"] += 1
            generators[meta.get("generator") or "unknown"] += 1
            for server in meta.get("mcp_servers", []):
                entry = servers.setdefault(
                    server["name"],
                    {
                        "name": server["name"],
                        "domain": server.get("domain"),
                        "license": server.get("license"),
                        "rows": 0,
                    },
                )
                entry["rows"] += 1
            yield meta

    summary.served = summarize_served(read_metadata())
    summary.rows = sum(by_subset.values())
    summary.by_subset = {s: by_subset[s] for s in SUBSETS}
    summary.teachers = dict(teachers.most_common())
    summary.generators = dict(generators.most_common())
    summary.servers = sorted(servers.values(), key=lambda s: (-s["rows"], s["name"]))


def deployment_names(summary: ExportSummary) -> list[str]:
    return list(dict.fromkeys([*summary.teachers, *summary.generators, *summary.judges]))


def table(header: list[str], body: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in body]
    return "\n".join(lines) if body else "_none_"


def render_dataset_card(summary: ExportSummary) -> str:
    """README.md for the export folder (Hugging Face dataset card with YAML front matter)."""
    parquet = "parquet" in summary.formats
    front = [
        "---",
        "license: other",
        "pretty_name: toucan tool-agentic trajectories",
        "task_categories: [text-generation]",
        "tags: [mcp, tool-use, agents, synthetic]",
    ]
    if parquet:
        front += [
            "configs:",
            "- config_name: default",
            "  data_files:",
            "  - split: train",
            "    path: data/train-*.parquet",
        ]
    front.append("---")
    licences = sorted({str(s.get("license") or "unknown") for s in summary.servers})
    sections = [
        "\n".join(front),
        "# toucan export",
        "Tool-agentic trajectories synthesized by toucan (a re-creation of TOUCAN, "
        "arXiv 2510.01179) against real MCP servers. Columns follow Toucan-1.5M: `uuid`, "
        "`subset_name`, `messages`, `question`, `available_tools`, `target_tools`, "
        "`question_quality_assessment`, `response_quality_assessment`, `metadata` (all strings; "
        "structured columns are JSON).",
        f"{summary.message}" if summary.message else "",
        embedded_notice(summary.served, summary.rows, deployment_names(summary)),
        "## Counts",
        f"Rows: **{summary.rows}** of {summary.candidates} kept trajectories "
        f"(mix: `{summary.mix}`).",
        table(
            ["subset", "rows", "mix target"],
            [[s, summary.by_subset.get(s, 0), summary.mix_plan.get(s, "-")] for s in SUBSETS],
        ),
        "## Excluded rows",
        table(["reason", "rows"], [[k, v] for k, v in sorted(summary.excluded.items())]),
        "## Scrubbing",
        SCRUB_NOTE.format(rows=summary.rows_scrubbed),
        table(
            ["kind", "replacements", "rows"],
            [
                [k, v, summary.scrubbed_rows.get(k, "-")]
                for k, v in sorted(summary.scrubbed.items())
            ],
        ),
        "## Models",
        "The models that served each role, as their servers named them in their replies:",
        table(["role", "served by", "rows"], served_rows(summary.served)),
        "The configured deployments that were asked:",
        table(["teacher deployment", "rows"], [[k, v] for k, v in summary.teachers.items()]),
        table(
            ["task generator deployment", "rows"], [[k, v] for k, v in summary.generators.items()]
        ),
        "Judge deployments: " + (", ".join(summary.judges) or "none"),
        "## Servers",
        f"Server licences: {', '.join(licences) or 'none'}. Each row's tool results come from "
        "these servers; check their licences before redistribution.",
        table(
            ["server", "domain", "license", "rows"],
            [
                [s["name"], s.get("domain") or "-", s.get("license") or "unknown", s["rows"]]
                for s in summary.servers
            ],
        ),
        "## Filters",
        "```json\n" + json.dumps(summary.filters, indent=2, sort_keys=True) + "\n```",
        "## Files",
        "\n".join(f"- `{f}`" for f in summary.files) or "_none_",
    ]
    return "\n\n".join(s for s in sections if s) + "\n"
