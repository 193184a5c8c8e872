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

import hashlib
import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from flows.queries import (
    KEPT_TRAJECTORY_IDS,
    KEPT_TRAJECTORY_RATING_IDS,
    LATEST_TASK_RATING_IDS,
)
from flows.run_context import RunContext
from flows.runner import StageJob, StagePlan
from tasks.export import (
    ExportBatch,
    ExportRejected,
    ExportSource,
    build_export_chunk,
    parse_trajectory_cells,
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
from toucan.ids import ID_HEX_CHARS, canonical_json
from toucan.records import Server, Task, TaskRating, Trajectory, TrajectoryRating
from toucan.store import Store

BATCH_SIZE = 500
NOTHING_NEW = "nothing_new: the rows to export are those of {folder}; nothing was written"
SUMMARY_FILE = "export_summary.json"
EMPTY_MESSAGE = (
    "No kept trajectories in the store: run `toucan trajectories` and "
    "`toucan filter-trajectories` first. The export is valid but empty."
)


# the kept, exportable trajectories: ok, kept by their newest rating, their task in the store
KEPT_ROWS = (
    f"status = 'ok' AND trajectory_id IN ({KEPT_TRAJECTORY_IDS}) "
    "AND task_id IN (SELECT task_id FROM tasks)"
)
KEPT_WITHOUT_TASK = (
    f"status = 'ok' AND trajectory_id IN ({KEPT_TRAJECTORY_IDS}) "
    "AND task_id NOT IN (SELECT task_id FROM tasks)"
)
KEY_CHUNK = 10_000  # rows of the content key read at a time
# a semi-join on the given ids (hashed once), not `list_contains(?, id)`, which compares
# every row of the table with every id of the chunk
AMONG_IDS = "task_id IN (SELECT unnest(?::VARCHAR[]))"


def has_trajectories(store: Store) -> bool:
    return store.path.exists() and bool(store.count(Trajectory))


def plan_chunks(store: Store, size: int | None = None) -> list[tuple[str, str]]:
    """The kept rows (`KEPT_ROWS`) in id order, cut into chunks of `size` (BATCH_SIZE):
    (first id, last id) of each, so the plan holds two ids per chunk, not the rows."""
    size = size or BATCH_SIZE
    if not has_trajectories(store):
        return []
    rows = store.query(
        f"SELECT min(trajectory_id), max(trajectory_id) FROM (SELECT trajectory_id, "
        f"(row_number() OVER (ORDER BY trajectory_id) - 1) // {int(size)} AS chunk "
        f"FROM trajectories WHERE {KEPT_ROWS}) GROUP BY chunk ORDER BY chunk"
    )
    return [(first, last) for first, last in rows]


def count_kept_rows(store: Store) -> tuple[int, list[str], dict[str, str]]:
    """(kept rows to export; the judges whose ratings keep them; the kept rows whose task is
    not in the store: trajectory id -> `task_missing`)."""
    if not has_trajectories(store):
        return 0, [], {}
    kept = store.query(f"SELECT count(*) FROM trajectories WHERE {KEPT_ROWS}")[0][0]
    judges = store.query(
        f"SELECT DISTINCT judge FROM trajectory_ratings WHERE rating_id IN "
        f"({KEPT_TRAJECTORY_RATING_IDS}) AND trajectory_id IN (SELECT trajectory_id "
        f"FROM trajectories WHERE {KEPT_ROWS}) ORDER BY judge"
    )
    without_task = store.query(f"SELECT trajectory_id FROM trajectories WHERE {KEPT_WITHOUT_TASK}")
    return int(kept), [j for (j,) in judges], {t: "task_missing" for (t,) in without_task}


def select_tasks(store: Store, task_ids: set[str]) -> dict[str, Task]:
    """task id -> task, for those of `task_ids` in the store."""
    if not task_ids:
        return {}
    return {t.task_id: t for t in store.select(Task, AMONG_IDS, [sorted(task_ids)])}


def load_export_sources(
    store: Store, chunk: tuple[str, str], servers: dict[str, Server]
) -> tuple[list[ExportSource], dict[str, str]]:
    """The sources of one chunk's kept rows (with their task, the ratings and the servers),
    and the rows that cannot be read (trajectory id -> reason)."""
    between = "trajectory_id BETWEEN ? AND ?"
    ratings = {
        r.trajectory_id: r
        for r in store.select(
            TrajectoryRating, f"{between} AND rating_id IN ({KEPT_TRAJECTORY_RATING_IDS})", chunk
        )
    }
    frame = store.frame(
        f"SELECT * FROM trajectories WHERE {between} AND {KEPT_ROWS} ORDER BY trajectory_id",
        chunk,
    )
    tasks = select_tasks(store, set(frame["task_id"].to_list()) if len(frame) else set())
    tasks |= select_tasks(store, {t.parent_id for t in tasks.values() if t.parent_id} - set(tasks))
    task_ratings = {
        r.task_id: r
        for r in store.select(
            TaskRating,
            f"{AMONG_IDS} AND rating_id IN ({LATEST_TASK_RATING_IDS})",
            [sorted(tasks)],
        )
    }
    sources: list[ExportSource] = []
    unreadable: dict[str, str] = {}
    for cells in frame.iter_rows(named=True):
        try:
            trajectory = parse_trajectory_cells(cells)
        except ExportRejected as exc:
            unreadable[cells["trajectory_id"]] = exc.reason
            continue
        task = tasks[trajectory.task_id]
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
    return sources, unreadable


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


def export_content_key(
    store: Store, formats: list[str], mix: str, seed: int, settings: Settings
) -> str:
    """What an export's files are made from: each kept row and the rating keeping it (a
    replaced row or a re-rating changes the key), the formats, the mix and its settings.
    `make_id("export", rows, ...)` over the rows sorted, its text hashed as it is read (in
    chunks of KEY_CHUNK) rather than built whole."""
    sql = (
        "SELECT trajectory_id, finished_at, rating_id, created_at "
        f"FROM (SELECT trajectory_id, finished_at FROM trajectories WHERE {KEPT_ROWS}) "
        "JOIN (SELECT trajectory_id, rating_id, created_at FROM trajectory_ratings "
        f"WHERE rating_id IN ({KEPT_TRAJECTORY_RATING_IDS})) USING (trajectory_id) "
        "ORDER BY trajectory_id"
    )
    digest = hashlib.sha256(b'["export",[')
    if has_trajectories(store):
        with store.connect(read_only=True) as con:
            cursor = con.execute(sql)
            first = True
            while chunk := cursor.fetchmany(KEY_CHUNK):
                for trajectory_id, finished_at, rating_id, created_at in chunk:
                    row = [
                        trajectory_id,
                        finished_at.isoformat(),
                        rating_id,
                        created_at.isoformat(),
                    ]
                    digest.update(b"" if first else b",")
                    digest.update(canonical_json(row).encode())
                    first = False
    export_settings = settings.export.model_dump(mode="json")
    rest = [sorted(formats), mix, seed, export_settings]
    digest.update(("]," + ",".join(canonical_json(part) for part in rest) + "]").encode())
    return f"export_{digest.hexdigest()[:ID_HEX_CHARS]}"


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
        return StagePlan(kept, already, plan_chunks(store))

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
