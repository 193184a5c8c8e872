"""`toucan filter-tasks`: stage 3, the judge's six scores and the keep decision per task."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from cli.app import ConfigOpt, JsonOpt, ProfileOpt, StoreOpt, app, console
from cli.running import run_flow_command


def outcome_table(title: str, rows: dict[str, dict[str, int]]) -> Table:
    table = Table(title=title)
    for column in ("name", "kept", "rejected", "error"):
        table.add_column(column, justify="left" if column == "name" else "right")
    for name, counts in sorted(rows.items()):
        table.add_row(name, *(str(counts.get(k, 0)) for k in ("kept", "rejected", "error")))
    return table


@app.command("filter-tasks")
def filter_tasks(
    limit: Annotated[
        int | None, typer.Option("--limit", help="Rate at most this many unrated tasks.")
    ] = None,
    store: StoreOpt = None,
    config: ConfigOpt = None,
    profile: ProfileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Judge the synthesized tasks on six 1-5 scores; keep those above the thresholds."""
    from flows.filter_tasks import filter_tasks_flow

    summary = run_flow_command(
        filter_tasks_flow,
        as_json=as_json,
        store=store,
        config=config,
        profile=profile,
        limit=limit,
    )
    if summary is None:
        return
    console.print(outcome_table("per strategy", summary.by_strategy))
    console.print(outcome_table("per generator", summary.by_generator))
    scores = Table(title="mean scores (threshold)")
    scores.add_column("dimension")
    scores.add_column("mean", justify="right")
    scores.add_column("threshold", justify="right")
    for dimension, threshold in summary.thresholds.items():
        mean = summary.mean_scores.get(dimension)
        scores.add_row(dimension, "" if mean is None else f"{mean:.2f}", str(threshold))
    console.print(scores)
    console.print(
        f"run {summary.run_id}: {summary.rated} rated ({summary.already_rated} rated before), "
        f"{summary.kept} kept, {summary.rejected} rejected, {summary.errors} errors; "
        f"tokens {summary.tokens_in} in / {summary.tokens_out} out, ${summary.cost_usd:.4f}"
    )
