"""Export: kept trajectories from the store -> a dataset folder (shards + card).

The flow reads the store; the batches build scrubbed rows (tasks/export.py); the summary step
samples the mix and writes the files (tasks/export_files.py). The only store write is the run
row and its events.

Without an explicit `out_dir` each run writes its own folder, `<store dir>/exports/<run id>/`,
and points `exports/latest` at it (tasks/output_dirs.py), so a nightly schedule never trips on
last night's folder; when the rows to export are exactly those of the latest export
(`content_key`), the run writes nothing and says `nothing_new`. Every folder is built in a
hidden partial sibling and renamed when complete.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from flows.queries import (
    KEPT_TRAJECTORY_IDS,
    LATEST_TASK_RATING_IDS,
    select_kept_trajectory_ratings,
)
from flows.run_context import RunContext
from flows.runner import StageJob, StagePlan
from tasks.export import (
    SUBSETS,
    ExportBatch,
    ExportRejected,
    ExportRow,
    ExportSource,
    build_export_rows,
    parse_trajectory_cells,
    plan_mix,
    sample_mix,
)
from tasks.export_files import ExportSummary, describe_rows, render_dataset_card
from tasks.export_formats import check_formats, write_formats
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
from toucan.ids import make_id
from toucan.records import Server, Task, TaskRating
from toucan.store import Store

BATCH_SIZE = 500
NOTHING_NEW = "nothing_new: the rows to export are those of {folder}; nothing was written"
SUMMARY_FILE = "export_summary.json"
EMPTY_MESSAGE = (
    "No kept trajectories in the store: run `toucan trajectories` and "
    "`toucan filter-trajectories` first. The export is valid but empty."
)


def select_export_sources(store: Store) -> tuple[list[ExportSource], Counter[str], dict[str, str]]:
    """Kept trajectories with their task, ratings and servers; unreadable rows by reason."""
    ratings = {r.trajectory_id: r for r in select_kept_trajectory_ratings(store)}
    excluded: Counter[str] = Counter()
    rejected: dict[str, str] = {}
    if not ratings:
        return [], excluded, rejected
    frame = store.frame(
        "SELECT * FROM trajectories WHERE status = 'ok' AND trajectory_id IN "
        f"({KEPT_TRAJECTORY_IDS}) ORDER BY trajectory_id"
    )
    tasks = {
        t.task_id: t
        for t in store.select(
            Task,
            "task_id IN (SELECT task_id FROM trajectories) OR task_id IN "
            "(SELECT parent_id FROM tasks WHERE task_id IN (SELECT task_id FROM trajectories))",
        )
    }
    task_ratings = {
        r.task_id: r for r in store.select(TaskRating, f"rating_id IN ({LATEST_TASK_RATING_IDS})")
    }
    servers = {s.server_id: s for s in store.select(Server)}
    sources = []
    for cells in frame.iter_rows(named=True):
        try:
            trajectory = parse_trajectory_cells(cells)
        except ExportRejected as exc:
            excluded[exc.reason] += 1
            rejected[cells["trajectory_id"]] = exc.reason
            continue
        task = tasks.get(trajectory.task_id)
        if task is None:
            excluded["task_missing"] += 1
            rejected[trajectory.trajectory_id] = "task_missing"
            continue
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
    return sources, excluded, rejected


def task_server_ids(task: Task, trajectory: Any) -> list[str]:
    """The servers whose tools the agent had: from the name map, else the task's servers."""
    from_map = [v.get("server_id") for v in trajectory.tool_name_map.values()]
    ordered = dict.fromkeys(s for s in from_map if s)
    return list(ordered) or list(task.server_ids)


def describe_filters(settings: Settings) -> dict[str, Any]:
    return {
        "task_thresholds": settings.filter_tasks.thresholds,
        "trajectory": settings.filter_trajectories.model_dump(mode="json", exclude={"concurrency"}),
        "tool_calls": "rows with an unknown tool, unparseable or schema-invalid arguments are "
        "excluded",
    }


def write_dataset(
    out_dir: Path, rows: list[ExportRow], summary: ExportSummary, settings: Settings
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


def export_content_key(
    sources: list[ExportSource], formats: list[str], mix: str, seed: int, settings: Settings
) -> str:
    """What an export's files are made from: each kept row and the rating keeping it (a
    replaced row or a re-rating changes the key), the formats, the mix and its settings."""
    rows = sorted(
        (
            s.trajectory.trajectory_id,
            s.trajectory.finished_at.isoformat(),
            s.trajectory_rating.rating_id,
            s.trajectory_rating.created_at.isoformat(),
        )
        for s in sources
    )
    export_settings = settings.export.model_dump(mode="json")
    return make_id("export", rows, sorted(formats), mix, seed, export_settings)


def exported_content_key(folder: Path) -> str | None:
    """The content key an export folder was written with (None for one that has none)."""
    try:
        return json.loads((folder / SUMMARY_FILE).read_text(encoding="utf-8")).get("content_key")
    except (OSError, ValueError):
        return None


class ExportJob(StageJob[list[ExportSource]]):
    """Builds scrubbed rows in batches, then samples the mix and writes the dataset."""

    name = "export"
    batch_fn = build_export_rows

    def run_params(self) -> dict[str, Any]:
        p = self.params
        return {"out": p.out_dir, "formats": p.formats or ["parquet"], "mix": p.mix, "seed": p.seed}

    def plan(self, ctx: RunContext) -> StagePlan[list[ExportSource]]:
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
        sources, excluded, self.rejected = select_export_sources(ctx.store)
        for reason, count in excluded.items():
            ctx.tally.add("excluded", reason, count)
        self.key = export_content_key(sources, formats, mix, self.params.seed, self.settings)
        latest = read_latest(self.exports) if self.per_run else None
        self.unchanged = latest if latest and exported_content_key(latest) == self.key else None
        self.judges = sorted({s.trajectory_rating.judge for s in sources})
        self.rows: list[ExportRow] = []  # the dataset is written whole at the end
        already = sum(excluded.values())
        if self.unchanged is not None:
            return StagePlan(0, already + len(sources), [])
        chunks = [sources[i : i + BATCH_SIZE] for i in range(0, len(sources), BATCH_SIZE)]
        return StagePlan(len(sources), already, chunks)

    def write(self, ctx: RunContext, output: ExportBatch) -> None:
        self.rows += output.rows
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
        params, tally = self.params, ctx.tally
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
        summary = ExportSummary(
            out_dir=str(self.out_dir), formats=formats, mix=params.mix, content_key=self.key
        )
        summary.candidates = ctx.plan.planned + ctx.plan.already_done
        rows = self.rows
        if params.mix == "paper":
            weights = self.settings.export.mix
            available = {s: sum(r.subset_name == s for r in rows) for s in weights}
            summary.mix_plan = plan_mix(available, weights)
            rows = sample_mix(rows, weights, params.seed)
        rows.sort(key=lambda r: (SUBSETS.index(r.subset_name), r.uuid))
        summary.excluded = tally.counts("excluded")
        summary.scrubbed = tally.counts("scrubbed")
        summary.scrubbed_rows = tally.counts("scrubbed_rows")
        summary.rows_scrubbed = tally.total("rows_scrubbed")
        summary.judges = self.judges
        summary.filters = describe_filters(self.settings)
        summary.message = EMPTY_MESSAGE if not rows else ""
        with building(self.out_dir, folder=True) as partial:
            write_dataset(partial, rows, summary, self.settings)
        if self.per_run:
            point_latest(self.exports / LATEST, self.out_dir)
        return summary

    def run_summary(self, summary: BaseModel) -> dict[str, Any]:
        return summary.model_dump(mode="json", exclude={"servers", "filters"})
