"""The core stage commands: `toucan synthesize`, `filter-tasks`, `trajectories` and
`filter-trajectories`, each running its flow (flows/registry.py) and printing its summary."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from cli.app import console, fail
from cli.running import RunOptions, stage_command

STRATEGY_NAMES = ("single_server", "multi_server", "featured")
STYLE_HELP = "Agent style: function-calling, react or langchain (repeatable; default: config)."


def count_table(title: str, counts: dict[str, int]) -> Table:
    table = Table(title=title)
    table.add_column("name")
    table.add_column("tasks", justify="right")
    for name, count in sorted(counts.items()):
        table.add_row(name, str(count))
    return table


def outcome_table(title: str, rows: dict[str, dict[str, int]]) -> Table:
    table = Table(title=title)
    for column in ("name", "kept", "rejected", "error"):
        table.add_column(column, justify="left" if column == "name" else "right")
    for name, counts in sorted(rows.items()):
        table.add_row(name, *(str(counts.get(k, 0)) for k in ("kept", "rejected", "error")))
    return table


def tally_table(title: str, columns: tuple[str, ...], summary: Any) -> Table:
    """One row per teacher and per server of a tally (`columns` are its fields, in order)."""
    table = Table(title=title)
    titles = {"cost_usd": "cost $"}
    for column in ("", "name", *columns):
        table.add_column(titles.get(column, column.replace("_", " ")), overflow="fold")
    for kind, tallies in (("teacher", summary.per_teacher), ("server", summary.per_server)):
        for name, tally in sorted(tallies.items()):
            table.add_row(kind, name, *(format_cell(c, getattr(tally, c)) for c in columns))
    return table


def format_cell(column: str, value: Any) -> str:
    if column == "keep_rate":
        return f"{value:.0%}"
    return f"{value:.4f}" if column == "cost_usd" else str(value)


@stage_command()
def synthesize(
    run: RunOptions,
    strategy: Annotated[
        list[str] | None,
        typer.Option(
            "--strategy",
            help="single_server | multi_server | featured; repeatable (default: all three).",
        ),
    ] = None,
    per_server: Annotated[
        int | None, typer.Option("--per-server", help="Tasks per server and strategy.")
    ] = None,
    limit: Annotated[
        int | None, typer.Option("--limit", help="Total tasks, split over the strategies.")
    ] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Seed of the whole plan.")] = None,
) -> None:
    """Synthesize tasks; a re-run with the same options only does what is missing."""
    from flows.registry import synthesize_flow

    if bad := sorted(set(strategy or []) - set(STRATEGY_NAMES)):
        fail(f"unknown strategy {', '.join(bad)}; choose from {', '.join(STRATEGY_NAMES)}")
    if per_server is not None and limit is not None:
        fail("give --per-server or --limit, not both")
    summary = run.flow(
        synthesize_flow, strategies=strategy, per_server=per_server, limit=limit, seed=seed
    )
    if summary is None:
        return
    console.print(count_table("ok tasks per strategy", summary.by_strategy))
    console.print(count_table("ok tasks per generator", summary.by_generator))
    if summary.by_reason:
        console.print(count_table("rejected / error reasons", summary.by_reason))
    status, near = summary.by_status, summary.near_duplicates
    console.print(
        f"run {summary.run_id}: {summary.planned} planned, {summary.already_done} already done, "
        f"{status.get('ok', 0) - near} ok, {status.get('rejected', 0) + near} rejected "
        f"({near} near duplicates), {status.get('error', 0)} errors; "
        f"tokens {summary.tokens_in} in / {summary.tokens_out} out, ${summary.cost_usd:.4f}"
    )


@stage_command("filter-tasks")
def filter_tasks(
    run: RunOptions,
    limit: Annotated[
        int | None, typer.Option("--limit", help="Rate at most this many unrated tasks.")
    ] = None,
) -> None:
    """Judge the synthesized tasks on six 1-5 scores; keep those above the thresholds."""
    from flows.registry import filter_tasks_flow

    summary = run.flow(filter_tasks_flow, limit=limit)
    if summary is None:
        return
    console.print(outcome_table("per strategy", summary.by_strategy))
    console.print(outcome_table("per generator", summary.by_generator))
    scores = Table(title="mean scores (threshold)")
    for column in ("dimension", "mean", "threshold"):
        scores.add_column(column, justify="left" if column == "dimension" else "right")
    for dimension, threshold in summary.thresholds.items():
        mean = summary.mean_scores.get(dimension)
        scores.add_row(dimension, "" if mean is None else f"{mean:.2f}", str(threshold))
    console.print(scores)
    console.print(
        f"run {summary.run_id}: {summary.rated} rated ({summary.already_rated} rated before), "
        f"{summary.kept} kept, {summary.rejected} rejected, {summary.errors} errors; "
        f"tokens {summary.tokens_in} in / {summary.tokens_out} out, ${summary.cost_usd:.4f}"
    )


@stage_command()
def trajectories(
    run: RunOptions,
    teacher: Annotated[
        list[str] | None, typer.Option("--teacher", help="Teacher name (repeatable; default all).")
    ] = None,
    style: Annotated[list[str] | None, typer.Option("--style", help=STYLE_HELP)] = None,
    limit: Annotated[
        int | None, typer.Option("--limit", help="At most N new trajectories.")
    ] = None,
) -> None:
    """Run each kept task with each teacher on its live MCP servers (resumable)."""
    from flows.registry import trajectories_flow

    summary = run.flow(
        trajectories_flow, teachers=teacher or None, styles=style or None, limit=limit
    )
    if summary is None:
        return
    columns = ("done", "failed", "tool_calls", "tool_errors", "tokens", "cost_usd")
    console.print(tally_table(f"trajectories run {summary.run_id}", columns, summary))
    console.print(
        f"{summary.total.done} done, {summary.total.failed} failed, "
        f"{summary.already_done} already done; stop reasons: {summary.stop_reasons}"
    )
    for server, why in summary.paused_servers.items():
        console.print(f"[red]server {server} paused:[/] {why.get('reason')} ({why.get('detail')})")


@stage_command("filter-trajectories")
def filter_trajectories(
    run: RunOptions,
    limit: Annotated[int | None, typer.Option("--limit", help="At most N ratings.")] = None,
) -> None:
    """Flag and judge each unrated trajectory; keep by the configured rule (resumable)."""
    from flows.registry import filter_trajectories_flow

    summary = run.flow(filter_trajectories_flow, limit=limit)
    if summary is None:
        return
    columns = ("rated", "kept", "errors", "keep_rate")
    console.print(tally_table(f"filter-trajectories run {summary.run_id}", columns, summary))
    console.print(
        f"{summary.total.kept}/{summary.total.rated} kept ({summary.already_rated} already "
        f"rated); flags fired: {summary.flags_fired}; reasons: {summary.by_reason}; "
        f"mean scores: {summary.mean_scores}"
    )
