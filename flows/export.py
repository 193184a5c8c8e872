"""Export flow: kept trajectories from the store -> a dataset folder (shards + card).

`export_dataset` runs the stage without Prefect; `export_flow` is the same stage as a Prefect
flow, building rows in batches with `.submit()`. Both read the store here and write files via
`tasks.export_formats` and `tasks.export_files`; the only store write is the run row and its
events.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prefect import flow

from tasks.export import (
    SUBSETS,
    ExportBatch,
    ExportRejected,
    ExportRow,
    ExportSource,
    build_export_batch,
    build_export_rows,
    parse_trajectory_cells,
    plan_mix,
    sample_mix,
)
from tasks.export_files import (
    ExportSummary,
    describe_rows,
    prepare_out_dir,
    render_dataset_card,
)
from tasks.export_formats import check_formats, write_formats
from toucan.config import Settings, load_settings
from toucan.progress import report_progress
from toucan.records import Server, Task, TaskRating, TrajectoryRating
from toucan.runs import RunContext, stage_run
from toucan.store import Store

BATCH_SIZE = 500
EMPTY_MESSAGE = (
    "No kept trajectories in the store: run `toucan trajectories` and "
    "`toucan filter-trajectories` first. The export is valid but empty."
)
LATEST_TRAJECTORY_RATING = """
    SELECT rating_id FROM (
        SELECT rating_id, keep, row_number() OVER (
            PARTITION BY trajectory_id ORDER BY created_at DESC, rating_id) AS rn
        FROM trajectory_ratings WHERE status = 'ok')
    WHERE rn = 1 AND keep"""
LATEST_TASK_RATING = """
    SELECT rating_id FROM (
        SELECT rating_id, row_number() OVER (
            PARTITION BY task_id ORDER BY created_at DESC, rating_id) AS rn
        FROM task_ratings WHERE status = 'ok')
    WHERE rn = 1"""

BuildRows = Callable[[list[list[ExportSource]]], list[ExportBatch]]


def select_export_sources(store: Store) -> tuple[list[ExportSource], Counter[str], dict[str, str]]:
    """Kept trajectories with their task, ratings and servers; unreadable rows by reason."""
    ratings = {
        r.trajectory_id: r
        for r in store.select(TrajectoryRating, f"rating_id IN ({LATEST_TRAJECTORY_RATING})")
    }
    excluded: Counter[str] = Counter()
    rejected: dict[str, str] = {}
    if not ratings:
        return [], excluded, rejected
    frame = store.frame(
        "SELECT * FROM trajectories WHERE status = 'ok' AND trajectory_id IN "
        f"(SELECT trajectory_id FROM trajectory_ratings WHERE rating_id IN "
        f"({LATEST_TRAJECTORY_RATING})) ORDER BY trajectory_id"
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
        r.task_id: r for r in store.select(TaskRating, f"rating_id IN ({LATEST_TASK_RATING})")
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


def run_export(
    ctx: RunContext,
    out_dir: Path,
    formats: list[str],
    *,
    mix: str,
    overwrite: bool,
    seed: int,
    build_rows: BuildRows,
) -> ExportSummary:
    """The export stage body shared by the flow and the plain function."""
    check_formats(formats)
    prepare_out_dir(out_dir, overwrite=overwrite)
    settings = ctx.settings
    sources, excluded, rejected = select_export_sources(ctx.store)
    summary = ExportSummary(out_dir=str(out_dir), formats=formats, mix=mix)
    summary.candidates = len(sources) + sum(excluded.values())
    chunks = [sources[i : i + BATCH_SIZE] for i in range(0, len(sources), BATCH_SIZE)]
    rows: list[ExportRow] = []
    scrubbed: Counter[str] = Counter()
    scrubbed_rows: Counter[str] = Counter()
    for batch in build_rows(chunks):
        rows += batch.rows
        excluded.update(batch.excluded)
        rejected.update(batch.rejected)
        scrubbed.update(batch.scrubbed)
        scrubbed_rows.update(batch.scrubbed_rows)
        summary.rows_scrubbed += batch.rows_scrubbed
    for trajectory_id, reason in sorted(rejected.items()):
        ctx.events.record(item_id=trajectory_id, status="rejected", error_class=reason)
    if mix == "paper":
        weights = settings.export.mix
        summary.mix_plan = plan_mix(
            {s: sum(r.subset_name == s for r in rows) for s in weights}, weights
        )
        rows = sample_mix(rows, weights, seed)
    elif mix != "none":
        raise ValueError(f"unknown mix {mix!r}; use 'paper' or 'none'")
    rows.sort(key=lambda r: (SUBSETS.index(r.subset_name), r.uuid))
    summary.excluded = dict(excluded)
    summary.scrubbed = dict(scrubbed)
    summary.scrubbed_rows = dict(scrubbed_rows)
    summary.judges = sorted({s.trajectory_rating.judge for s in sources})
    summary.filters = describe_filters(settings)
    summary.message = EMPTY_MESSAGE if not rows else ""
    describe_rows(rows, summary)
    files = write_formats(rows, out_dir, formats, settings.export.shard_rows)
    summary.files = [str(p.relative_to(out_dir)) for p in files] + ["README.md"]
    (out_dir / "README.md").write_text(render_dataset_card(summary), encoding="utf-8")
    # the file travels with the dataset: it names its folder, not where this machine keeps it
    shipped = summary.model_copy(update={"out_dir": out_dir.name})
    (out_dir / "export_summary.json").write_text(
        json.dumps(shipped.model_dump(mode="json"), indent=2), encoding="utf-8"
    )
    ctx.summary.update(summary.model_dump(mode="json", exclude={"servers", "filters"}))
    return summary


def export_dataset(
    store: Store,
    settings: Settings,
    out_dir: Path,
    formats: list[str],
    *,
    mix: str = "none",
    overwrite: bool = False,
    seed: int = 0,
) -> ExportSummary:
    """The export stage without Prefect."""
    params = {"out": str(out_dir), "formats": formats, "mix": mix, "seed": seed}
    with stage_run(store, settings, "export", params) as ctx:
        return run_export(
            ctx,
            out_dir,
            formats,
            mix=mix,
            overwrite=overwrite,
            seed=seed,
            build_rows=lambda chunks: [build_export_rows(c) for c in chunks],
        )


def submit_batches(chunks: list[list[ExportSource]]) -> list[ExportBatch]:
    futures = [build_export_batch.submit(chunk) for chunk in chunks]
    batches = []
    for done, future in enumerate(futures, start=1):
        batches.append(future.result())
        report_progress("export", done, len(futures))
    return batches


@flow(name="export", log_prints=False)
def export_flow(
    out_dir: str = "out/dataset",
    formats: list[str] | None = None,
    mix: str = "none",
    overwrite: bool = False,
    seed: int = 0,
    store_path: str | None = None,
    config: str | None = None,
    profile: str | None = None,
) -> dict[str, Any]:
    settings = load_settings(config, profile=profile)
    store = Store(store_path or settings.store)
    formats = formats or ["parquet"]
    params = {"out": out_dir, "formats": formats, "mix": mix, "seed": seed}
    with stage_run(store, settings, "export", params) as ctx:
        summary = run_export(
            ctx,
            Path(out_dir),
            formats,
            mix=mix,
            overwrite=overwrite,
            seed=seed,
            build_rows=submit_batches,
        )
    return summary.model_dump(mode="json")
