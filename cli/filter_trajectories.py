"""`toucan filter-trajectories`: stage 5, rules + judge over the trajectories."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from cli.app import ConfigOpt, JsonOpt, ProfileOpt, StoreOpt, app, console
from cli.running import run_flow_command


@app.command("filter-trajectories")
def filter_trajectories(
    limit: Annotated[int | None, typer.Option("--limit", help="At most N ratings.")] = None,
    store: StoreOpt = None,
    config: ConfigOpt = None,
    profile: ProfileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Flag and judge each unrated trajectory; keep by the configured rule (resumable)."""
    from flows.filter_trajectories import filter_trajectories_flow

    summary = run_flow_command(
        filter_trajectories_flow,
        as_json=as_json,
        store=store,
        config=config,
        profile=profile,
        limit=limit,
    )
    if summary is None:
        return
    table = Table(title=f"filter-trajectories run {summary.run_id}")
    for column in ("", "name", "rated", "kept", "errors", "keep rate"):
        table.add_column(column)
    for kind, tallies in (("teacher", summary.per_teacher), ("server", summary.per_server)):
        for name, tally in sorted(tallies.items()):
            table.add_row(
                kind,
                name,
                str(tally.rated),
                str(tally.kept),
                str(tally.errors),
                f"{tally.keep_rate:.0%}",
            )
    console.print(table)
    console.print(
        f"{summary.total.kept}/{summary.total.rated} kept ({summary.already_rated} already "
        f"rated); flags fired: {summary.flags_fired}; reasons: {summary.by_reason}; "
        f"mean scores: {summary.mean_scores}"
    )
