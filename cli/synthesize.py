"""`toucan synthesize`: stage 2, tasks from the onboarded servers by the five generators."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from cli.app import ConfigOpt, JsonOpt, ProfileOpt, StoreOpt, app, console, fail
from cli.running import run_flow_command

STRATEGY_NAMES = ("single_server", "multi_server", "featured")


def count_table(title: str, counts: dict[str, int]) -> Table:
    table = Table(title=title)
    table.add_column("name")
    table.add_column("tasks", justify="right")
    for name, count in sorted(counts.items()):
        table.add_row(name, str(count))
    return table


@app.command()
def synthesize(
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
    store: StoreOpt = None,
    config: ConfigOpt = None,
    profile: ProfileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Synthesize tasks; a re-run with the same options only does what is missing."""
    from flows.synthesize import synthesize_flow

    if bad := sorted(set(strategy or []) - set(STRATEGY_NAMES)):
        fail(f"unknown strategy {', '.join(bad)}; choose from {', '.join(STRATEGY_NAMES)}")
    if per_server is not None and limit is not None:
        fail("give --per-server or --limit, not both")
    summary = run_flow_command(
        synthesize_flow,
        as_json=as_json,
        store=store,
        config=config,
        profile=profile,
        strategies=strategy,
        per_server=per_server,
        limit=limit,
        seed=seed,
    )
    if summary is None:
        return
    console.print(count_table("ok tasks per strategy", summary.by_strategy))
    console.print(count_table("ok tasks per generator", summary.by_generator))
    if summary.by_reason:
        console.print(count_table("rejected / error reasons", summary.by_reason))
    status = summary.by_status
    console.print(
        f"run {summary.run_id}: {summary.planned} planned, {summary.already_done} already done, "
        f"{status.get('ok', 0) - summary.near_duplicates} ok, "
        f"{status.get('rejected', 0) + summary.near_duplicates} rejected "
        f"({summary.near_duplicates} near duplicates), {status.get('error', 0)} errors; "
        f"tokens {summary.tokens_in} in / {summary.tokens_out} out, ${summary.cost_usd:.4f}"
    )
