"""Export: kept trajectories from the store -> a dataset folder (shards + card).

The flow reads the store chunk by chunk (each batch's kept rows when it is submitted); the
batches build scrubbed rows (tasks/export.py); the flow stages them on disk as they come
(tasks/export_spill.py); the summary step samples the mix there and writes the files from it
in chunks (tasks/export_files.py). No step holds all the rows: the run's memory does not grow
with their count. The only store write is the run row and its events.

Without an explicit `out_dir` each run writes its own folder, `<store dir>/exports/<run id>/`,
and points `exports/latest` at it (tasks/output_dirs.py), so a nightly schedule never trips on
last night's folder; when the rows to export are exactly those of the latest export
(`content_key`), the run writes nothing and says `nothing_new`. Every folder is built in a
hidden partial sibling and renamed when complete.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from flows.export_sources import (
    count_kept_rows,
    export_content_key,
    load_export_sources,
    plan_chunks,
)
from flows.run_context import RunContext
from flows.runner import StageJob, StagePlan
from tasks.export import (
    ExportBatch,
    build_export_chunk,
    plan_mix,
)
from tasks.export_files import ExportSummary, describe_rows, render_dataset_card
from tasks.export_formats import check_formats, write_formats
from tasks.export_spill import ExportRows, RowSpill
from tasks.output_dirs import (
    LATEST,
    building,
    exports_dir,
    point_latest,
    read_latest,
    refuse_existing,
    remove_stale_partials,
)
from toucan.config import Settings
from toucan.records import Server

BATCH_SIZE = 500
NOTHING_NEW = "nothing_new: the rows to export are those of {folder}; nothing was written"
SUMMARY_FILE = "export_summary.json"
EMPTY_MESSAGE = (
    "No kept trajectories in the store: run `toucan trajectories` and "
    "`toucan filter-trajectories` first. The export is valid but empty."
)


def describe_filters(settings: Settings) -> dict[str, Any]:
    return {
        "task_thresholds": settings.filter_tasks.thresholds,
        "trajectory": settings.filter_trajectories.model_dump(mode="json", exclude={"concurrency"}),
        "tool_calls": "rows with an unknown tool, unparseable or schema-invalid arguments are "
        "excluded",
    }


def write_dataset(
    out_dir: Path, rows: ExportRows, summary: ExportSummary, settings: Settings
) -> None:
    """The shards of every format, the dataset card and `export_summary.json`."""
    describe_rows(rows, summary)
    files = write_formats(rows, out_dir, summary.formats, settings.export.shard_rows)
    summary.files = [str(p.relative_to(out_dir)) for p in files] + ["README.md"]
    (out_dir / "README.md").write_text(render_dataset_card(summary), encoding="utf-8")
    # the file travels with the dataset: it names its folder, not where this machine keeps it
    shipped = summary.model_copy(update={"out_dir": Path(summary.out_dir).name})
    (out_dir / SUMMARY_FILE).write_text(
        json.dumps(shipped.model_dump(mode="json"), indent=2), encoding="utf-8"
    )


def exported_content_key(folder: Path) -> str | None:
    """The content key an export folder was written with (None for one that has none)."""
    try:
        return json.loads((folder / SUMMARY_FILE).read_text(encoding="utf-8")).get("content_key")
    except (OSError, ValueError):
        return None


class ExportJob(StageJob[tuple[str, str]]):
    """Builds scrubbed rows in batches of kept rows read chunk by chunk, stages them on disk
    (tasks/export_spill.py), then samples the mix and writes the dataset from there."""

    name = "export"
    batch_fn = build_export_chunk

    def run_params(self) -> dict[str, Any]:
        p = self.params
        return {"out": p.out_dir, "formats": p.formats or ["parquet"], "mix": p.mix, "seed": p.seed}

    def plan(self, ctx: RunContext) -> StagePlan[tuple[str, str]]:
        formats, mix = self.params.formats or ["parquet"], self.params.mix
        check_formats(formats)
        if mix not in ("paper", "none"):
            raise ValueError(f"unknown mix {mix!r}; use 'paper' or 'none'")
        self.per_run = self.params.out_dir is None
        self.exports = exports_dir(ctx.store.path)
        if self.per_run:
            self.out_dir = self.exports / ctx.run_id
            remove_stale_partials(self.exports)
        else:
            self.out_dir = Path(self.params.out_dir).resolve()
            refuse_existing(self.out_dir, overwrite=self.params.overwrite)
        self.store = store = ctx.store
        kept, self.judges, self.rejected = count_kept_rows(store)
        if self.rejected:
            ctx.tally.add("excluded", "task_missing", len(self.rejected))
        self.key = export_content_key(store, formats, mix, self.params.seed, self.settings)
        latest = read_latest(self.exports) if self.per_run else None
        self.unchanged = latest if latest and exported_content_key(latest) == self.key else None
        already = len(self.rejected)
        if self.unchanged is not None:
            return StagePlan(0, already + kept, [])
        self.servers = {s.server_id: s for s in store.select(Server)}
        # the rows, staged on disk as batches finish: the dataset is written from there
        self.spill = RowSpill(self.params.seed)
        return StagePlan(kept, already, plan_chunks(store, BATCH_SIZE))

    def batch_args(self, batch: tuple[str, str]) -> dict[str, Any]:
        """The chunk's sources, read when it is submitted (only running chunks are held)."""
        sources, unreadable = load_export_sources(self.store, batch, self.servers)
        return {"sources": sources, "unreadable": unreadable}

    def write(self, ctx: RunContext, output: ExportBatch) -> None:
        self.spill.add(output.rows)
        self.rejected.update(output.rejected)
        for name in ("excluded", "scrubbed", "scrubbed_rows"):
            for key, count in getattr(output, name).items():
                ctx.tally.add(name, key, count)
        ctx.tally.add("rows_scrubbed", "", output.rows_scrubbed)
        for _ in output.rows:
            ctx.tally.item("ok")
        for reason in output.rejected.values():
            ctx.tally.item("rejected", reason)

    def summarise(self, ctx: RunContext) -> BaseModel:
        for trajectory_id, reason in sorted(self.rejected.items()):
            ctx.events.record(item_id=trajectory_id, status="rejected", error_class=reason)
        params = self.params
        formats = params.formats or ["parquet"]
        if self.unchanged is not None:
            return ExportSummary(
                out_dir=str(self.unchanged),
                formats=formats,
                mix=params.mix,
                candidates=ctx.plan.already_done,
                content_key=self.key,
                message=NOTHING_NEW.format(folder=self.unchanged),
            )
        with self.spill:
            return self.write_export(ctx, self.spill)

    def write_export(self, ctx: RunContext, spill: RowSpill) -> ExportSummary:
        """Sample the mix from the staged rows, write the dataset, point `latest` at it."""
        params, tally = self.params, ctx.tally
        summary = ExportSummary(
            out_dir=str(self.out_dir),
            formats=params.formats or ["parquet"],
            mix=params.mix,
            content_key=self.key,
        )
        summary.candidates = ctx.plan.planned + ctx.plan.already_done
        quotas = None
        if params.mix == "paper":
            weights = self.settings.export.mix
            staged = spill.counts()
            summary.mix_plan = plan_mix({s: staged.get(s, 0) for s in weights}, weights)
            quotas = summary.mix_plan
        rows = spill.finish(quotas)
        summary.excluded = tally.counts("excluded")
        summary.scrubbed = tally.counts("scrubbed")
        summary.scrubbed_rows = tally.counts("scrubbed_rows")
        summary.rows_scrubbed = tally.total("rows_scrubbed")
        summary.judges = self.judges
        summary.filters = describe_filters(self.settings)
        summary.message = EMPTY_MESSAGE if not len(rows) else ""
        with building(self.out_dir, folder=True) as partial:
            write_dataset(partial, rows, summary, self.settings)
        if self.per_run:
            point_latest(self.exports / LATEST, self.out_dir)
        return summary

    def run_summary(self, summary: BaseModel) -> dict[str, Any]:
        return summary.model_dump(mode="json", exclude={"servers", "filters"})
