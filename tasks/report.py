"""The run report: one self-contained HTML page of plotly charts over the store.

The report flow reads the store into `ReportFrames` (flows/report.py); the `figure_*`
functions turn frames into plotly figures; `render_report_html` embeds plotly.js inline, so
the page works offline and from a file; `write_report` is the stage's one batch.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import plotly.graph_objects as go
import plotly.io as pio
import polars as pl
from plotly.offline import get_plotlyjs
from plotly.subplots import make_subplots
from pydantic import BaseModel

from toucan.records import TASK_SCORES, TRAJECTORY_SCORES


@dataclass
class ReportFrames:
    servers: pl.DataFrame
    tasks: pl.DataFrame
    task_scores: pl.DataFrame
    trajectories: pl.DataFrame
    trajectory_scores: pl.DataFrame
    server_yield: pl.DataFrame
    server_throughput: pl.DataFrame
    models: pl.DataFrame
    stages: pl.DataFrame  # the latest run of each stage (STAGE_COLUMNS)


STAGE_COLUMNS = ("stage", "status", "planned", "done", "failed", "retryable", "cost_usd", "wall_s")


def stage_frame(rows: Sequence[BaseModel]) -> pl.DataFrame:
    """Stage rows (toucan.stage_table.StageRow) as a frame of STAGE_COLUMNS."""
    dumped = [row.model_dump(include=set(STAGE_COLUMNS)) for row in rows]
    return pl.DataFrame(dumped or None, schema=list(STAGE_COLUMNS), orient="row")


def styled(fig: go.Figure, title: str, height: int = 380) -> go.Figure:
    fig.update_layout(
        title=title, height=height, template="plotly_white", margin={"t": 60, "b": 40}
    )
    return fig


def figure_servers_per_domain(frames: ReportFrames) -> go.Figure:
    counts = (
        frames.servers.filter(pl.col("status") != "rejected")
        .group_by("domain")
        .len()
        .sort("len", descending=True)
    )
    fig = go.Figure(go.Bar(x=counts["domain"].to_list(), y=counts["len"].to_list()))
    return styled(fig, "Servers per domain")


def figure_histogram(values: list, title: str, x_title: str) -> go.Figure:
    fig = go.Figure(go.Histogram(x=values))
    fig.update_xaxes(title=x_title)
    fig.update_yaxes(title="count")
    return styled(fig, title)


def figure_task_shape(frames: ReportFrames) -> go.Figure:
    ok = frames.tasks.filter(pl.col("status") == "ok")
    fig = make_subplots(rows=1, cols=2, subplot_titles=("Tools per task", "Servers per task"))
    fig.add_trace(go.Histogram(x=ok["tools"].to_list(), name="tools", xbins={"size": 1}), 1, 1)
    fig.add_trace(go.Histogram(x=ok["servers"].to_list(), name="servers", xbins={"size": 1}), 1, 2)
    fig.update_xaxes(dtick=1)
    fig.update_layout(showlegend=False)
    return styled(fig, "Task shape")


def figure_trajectory_shape(frames: ReportFrames) -> go.Figure:
    ok = frames.trajectories.filter(pl.col("status") == "ok")
    fig = make_subplots(
        rows=1, cols=2, subplot_titles=("Turns per trajectory", "Tool calls per trajectory")
    )
    fig.add_trace(go.Histogram(x=ok["turns"].to_list(), name="turns", xbins={"size": 1}), 1, 1)
    fig.add_trace(
        go.Histogram(x=ok["tool_calls"].to_list(), name="tool calls", xbins={"size": 1}), 1, 2
    )
    fig.update_xaxes(dtick=1)
    fig.update_layout(showlegend=False)
    return styled(fig, "Trajectory shape")


def figure_score_histograms(frame: pl.DataFrame, names: tuple[str, ...], title: str) -> go.Figure:
    cols = 3 if len(names) > 2 else len(names)
    rows = -(-len(names) // cols)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=names)
    for index, name in enumerate(names):
        values = frame[name].drop_nulls().to_list()
        fig.add_trace(
            go.Histogram(x=values, name=name, xbins={"start": 0.5, "end": 5.5, "size": 1}),
            row=index // cols + 1,
            col=index % cols + 1,
        )
    fig.update_xaxes(range=[0.5, 5.5], dtick=1)
    fig.update_layout(showlegend=False)
    return styled(fig, title, height=300 * rows)


def figure_funnel(frames: ReportFrames) -> go.Figure:
    kept_tasks = frames.task_scores.filter(pl.col("keep"))["task_id"].n_unique()
    ok_trajectories = frames.trajectories.filter(pl.col("status") == "ok")
    stages = {
        "synthesized tasks": frames.tasks.filter(pl.col("status") == "ok").height,
        "kept tasks": kept_tasks,
        "trajectories": ok_trajectories.height,
        "kept trajectories": ok_trajectories.filter(pl.col("kept")).height,
    }
    fig = go.Figure(go.Funnel(y=list(stages), x=list(stages.values()), textinfo="value"))
    return styled(fig, "Funnel")


def figure_servers(frames: ReportFrames) -> go.Figure:
    fig = make_subplots(
        rows=1, cols=2, subplot_titles=("Yield: kept / trajectories", "Throughput (items/min)")
    )
    yields = frames.server_yield.with_columns(
        (pl.col("kept") / pl.col("trajectories").clip(lower_bound=1)).alias("yield")
    )
    fig.add_trace(
        go.Bar(x=yields["server"].to_list(), y=yields["yield"].to_list(), name="yield"), 1, 1
    )
    throughput = frames.server_throughput.with_columns(
        (pl.col("items") * 60 / pl.col("span_s")).alias("per_min")
    )
    fig.add_trace(
        go.Bar(x=throughput["server"].to_list(), y=throughput["per_min"].to_list(), name="rate"),
        1,
        2,
    )
    fig.update_layout(showlegend=False)
    return styled(fig, "Per-server yield and throughput")


def figure_models(frames: ReportFrames) -> go.Figure:
    models = frames.models
    fig = make_subplots(rows=1, cols=2, subplot_titles=("Tokens", "Cost (USD)"))
    names = models["model"].to_list()
    fig.add_trace(go.Bar(x=names, y=models["tokens_in"].to_list(), name="tokens in"), 1, 1)
    fig.add_trace(go.Bar(x=names, y=models["tokens_out"].to_list(), name="tokens out"), 1, 1)
    fig.add_trace(go.Bar(x=names, y=models["cost_usd"].to_list(), name="cost"), 1, 2)
    fig.update_layout(barmode="stack")
    return styled(fig, "Per-model tokens and cost")


def build_figures(frames: ReportFrames) -> dict[str, go.Figure]:
    """Chart id -> figure, in page order."""
    return {
        "funnel": figure_funnel(frames),
        "servers-per-domain": figure_servers_per_domain(frames),
        "task-shape": figure_task_shape(frames),
        "trajectory-shape": figure_trajectory_shape(frames),
        "task-scores": figure_score_histograms(
            frames.task_scores, TASK_SCORES, "Task scores (six dimensions)"
        ),
        "trajectory-scores": figure_score_histograms(
            frames.trajectory_scores, TRAJECTORY_SCORES, "Trajectory scores"
        ),
        "servers": figure_servers(frames),
        "models": figure_models(frames),
    }


def stage_table_html(stages: pl.DataFrame) -> str:
    """The per-stage table: planned / done / failed / retryable, cost and wall time of the
    latest run of each stage ("-" where unknown)."""
    headers = {"cost_usd": "cost (USD)", "wall_s": "wall (s)"}
    head = "".join(f"<th>{html.escape(headers.get(c, c))}</th>" for c in STAGE_COLUMNS)
    body = "".join(
        "<tr>"
        + "".join(
            f"<td>{'-' if row[c] is None else html.escape(str(row[c]))}</td>" for c in STAGE_COLUMNS
        )
        + "</tr>"
        for row in stages.iter_rows(named=True)
    )
    return (
        '<section id="stages"><h2>Stages (latest run of each)</h2>'
        f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></section>"
    )


def render_report_html(
    figures: dict[str, go.Figure], title: str, subtitle: str = "", tables: str = ""
) -> str:
    """One page, plotly.js inline (no CDN): opens offline and from a file. `tables`: HTML
    shown above the charts."""
    charts = "\n".join(
        '<section class="chart">'
        + pio.to_html(fig, full_html=False, include_plotlyjs=False, div_id=chart_id)
        + "</section>"
        for chart_id, fig in figures.items()
    )
    return (
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title>"
        "<style>body{font-family:sans-serif;margin:24px;max-width:1200px}"
        ".chart{margin-bottom:24px}"
        "table{border-collapse:collapse;margin-bottom:24px}"
        "th,td{border:1px solid #ddd;padding:4px 10px;text-align:right}"
        "th:first-child,td:first-child{text-align:left}</style>"
        f"<script type='text/javascript'>{get_plotlyjs()}</script></head><body>"
        f"<h1>{html.escape(title)}</h1><p>{html.escape(subtitle)}</p>\n{tables}\n{charts}\n"
        "</body></html>"
    )


def write_report(frames: ReportFrames, out_file: Path, store_label: str) -> dict[str, int]:
    """Write the report page for the frames read from the store named `store_label`; returns
    the counts shown in its funnel."""
    figures = build_figures(frames)
    subtitle = (
        f"store {store_label}: {frames.servers.height} servers, {frames.tasks.height} tasks, "
        f"{frames.trajectories.height} trajectories"
    )
    out_file.parent.mkdir(parents=True, exist_ok=True)
    page = render_report_html(
        figures, "toucan run report", subtitle, stage_table_html(frames.stages)
    )
    out_file.write_text(page, "utf-8")
    return {
        "servers": frames.servers.height,
        "tasks": frames.tasks.height,
        "trajectories": frames.trajectories.height,
        "charts": len(figures),
    }
