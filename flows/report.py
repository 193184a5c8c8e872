"""The `report` stage: one self-contained HTML page over the store. The flow reads the store
(read-only: no run row, no writer lock, so it runs beside a writing stage); the one batch
renders the page (tasks/report.py) into a hidden partial file, renamed into place when
complete. Without an explicit `out` the page is `<store dir>/exports/<run id>.html`, and
`exports/latest.html` points at the newest (tasks/output_dirs.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel

from flows.run_context import RunContext
from flows.runner import StageJob, StagePlan
from tasks.output_dirs import (
    LATEST_REPORT,
    discard,
    exports_dir,
    finish_partial,
    point_latest,
    start_partial,
)
from tasks.report import ReportFrames, stage_frame, write_report
from toucan.events import SERVER_SEPARATOR
from toucan.records import TASK_SCORES, TRAJECTORY_SCORES
from toucan.stage_table import latest_stage_rows

QUERIES = {
    "servers": "SELECT name, coalesce(domain, 'unlabelled') AS domain, status FROM servers",
    "tasks": """SELECT task_id, kind, status, json_array_length(target_tools) AS tools,
                json_array_length(server_ids) AS servers FROM tasks""",
    "task_scores": "SELECT task_id, keep, "
    + ", ".join(f"CAST(json_extract(scores, '$.{d}.score') AS INTEGER) AS {d}" for d in TASK_SCORES)
    + " FROM task_ratings WHERE status = 'ok'",
    "trajectories": """SELECT t.trajectory_id, t.kind, t.turns, t.tool_calls, t.status,
                coalesce(bool_or(r.keep), false) AS kept
                FROM trajectories t LEFT JOIN trajectory_ratings r USING (trajectory_id)
                GROUP BY ALL""",
    "trajectory_scores": "SELECT trajectory_id, "
    + ", ".join(
        f"CAST(json_extract(scores, '$.{d}.score') AS INTEGER) AS {d}" for d in TRAJECTORY_SCORES
    )
    + " FROM trajectory_ratings WHERE status = 'ok'",
    "server_yield": """SELECT s.name AS server, count(DISTINCT t.trajectory_id) AS trajectories,
                count(DISTINCT CASE WHEN r.keep THEN t.trajectory_id END) AS kept
                FROM trajectories t JOIN tasks k USING (task_id)
                CROSS JOIN unnest(CAST(k.server_ids AS VARCHAR[])) AS u(server_id)
                JOIN servers s ON s.server_id = u.server_id
                LEFT JOIN trajectory_ratings r ON r.trajectory_id = t.trajectory_id
                GROUP BY s.name ORDER BY s.name""",
    # by server name, a multi-server item once per server (as in toucan/status.py)
    "server_throughput": f"""SELECT coalesce(s.name, u.server) AS server, count(*) AS items,
                CAST(sum(CASE WHEN e.status = 'ok' THEN 1 ELSE 0 END) AS BIGINT) AS ok,
                greatest(epoch(max(e.ended_at)) - epoch(min(e.started_at)), 1) AS span_s
                FROM events e
                CROSS JOIN unnest(string_split(e.server, '{SERVER_SEPARATOR}')) AS u(server)
                LEFT JOIN servers s ON s.server_id = u.server
                WHERE e.kind = 'item' AND e.server IS NOT NULL GROUP BY 1 ORDER BY 1""",
    "models": """SELECT model, CAST(sum(tokens_in) AS BIGINT) AS tokens_in,
                CAST(sum(tokens_out) AS BIGINT) AS tokens_out,
                sum(cost_usd) AS cost_usd, count(*) AS calls
                FROM events WHERE model IS NOT NULL GROUP BY model ORDER BY model""",
}


class ReportSummary(BaseModel):
    out: str
    servers: int = 0
    tasks: int = 0
    trajectories: int = 0
    charts: int = 0


class ReportJob(StageJob[ReportFrames]):
    """Reads every frame the report draws, then renders them as one batch."""

    name = "report"
    batch_fn = write_report
    records_run = False

    def plan(self, ctx: RunContext) -> StagePlan[ReportFrames]:
        frames = ReportFrames(
            **{name: ctx.store.frame(sql) for name, sql in QUERIES.items()},
            stages=stage_frame(latest_stage_rows(ctx.store)),
        )
        self.counts: dict[str, int] = {}
        return StagePlan(1, 0, [frames])

    def batch_kwargs(self, ctx: RunContext) -> dict[str, Any]:
        self.per_run = self.params.out is None
        self.exports = exports_dir(ctx.store.path)
        own = self.exports / f"{ctx.run_id}.html"
        self.out = own if self.per_run else Path(self.params.out).resolve()
        self.partial = start_partial(self.out, folder=False)
        return {"out_file": self.partial, "store_label": str(ctx.store.path)}

    def batch_failed(self, batch: ReportFrames, error: Exception) -> Any:
        discard(self.partial)  # nothing half-written stays behind
        raise error

    def write(self, ctx: RunContext, output: dict[str, int]) -> None:
        self.counts = output
        ctx.tally.item("ok")

    def summarise(self, ctx: RunContext) -> BaseModel:
        finish_partial(self.partial, self.out)
        if self.per_run:
            point_latest(self.exports / LATEST_REPORT, self.out)
        return ReportSummary(out=str(self.out), **self.counts)
