"""`toucan trajectories`: stage 4, agent trajectories with real tool calls."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from cli.app import ConfigOpt, JsonOpt, ProfileOpt, StoreOpt, app, console
from cli.running import run_flow_command

STYLE_HELP = "Agent style: function-calling, react or langchain (repeatable; default: config)."


@app.command()
def trajectories(
    teacher: Annotated[
        list[str] | None, typer.Option("--teacher", help="Teacher name (repeatable; default all).")
    ] = None,
    style: Annotated[list[str] | None, typer.Option("--style", help=STYLE_HELP)] = None,
    limit: Annotated[
        int | None, typer.Option("--limit", help="At most N new trajectories.")
    ] = None,
    store: StoreOpt = None,
    config: ConfigOpt = None,
    profile: ProfileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Run each kept task with each teacher on its live MCP servers (resumable)."""
    from flows.trajectories import trajectories_flow

    summary = run_flow_command(
        trajectories_flow,
        as_json=as_json,
        store=store,
        config=config,
        profile=profile,
        teachers=teacher or None,
        styles=style or None,
        limit=limit,
    )
    if summary is None:
        return
    print_tallies(f"trajectories run {summary.run_id}", summary.per_teacher, summary.per_server)
    console.print(
        f"{summary.total.done} done, {summary.total.failed} failed, "
        f"{summary.already_done} already done; stop reasons: {summary.stop_reasons}"
    )
    for server, why in summary.paused_servers.items():
        console.print(f"[red]server {server} paused:[/] {why.get('reason')} ({why.get('detail')})")


def print_tallies(title: str, per_teacher: dict, per_server: dict) -> None:  # type: ignore[type-arg]
    table = Table(title=title)
    for column in ("", "name", "done", "failed", "tool calls", "tool errors", "tokens", "cost $"):
        table.add_column(column, overflow="fold")
    for kind, tallies in (("teacher", per_teacher), ("server", per_server)):
        for name, tally in sorted(tallies.items()):
            table.add_row(
                kind,
                name,
                str(tally.done),
                str(tally.failed),
                str(tally.tool_calls),
                str(tally.tool_errors),
                str(tally.tokens),
                f"{tally.cost_usd:.4f}",
            )
    console.print(table)
