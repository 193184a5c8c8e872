"""`toucan irrelevance`, `toucan diversify`, `toucan multi-turn`: the three extensions."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from cli.app import ConfigOpt, JsonOpt, ProfileOpt, StoreOpt, app, console, fail
from cli.running import run_flow_command

SeedOpt = Annotated[int | None, typer.Option("--seed", help="Seed (default synthesize.seed).")]


def show(title: str, summary: dict[str, Any]) -> None:
    table = Table(title=title)
    table.add_column("field")
    table.add_column("value", overflow="fold")
    for key, value in summary.items():
        table.add_row(key, str(value))
    console.print(table)


@app.command()
def irrelevance(
    store: StoreOpt = None,
    config: ConfigOpt = None,
    profile: ProfileOpt = None,
    seed: SeedOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Pair kept tasks with servers that cannot solve them (new `irrelevant` tasks)."""
    from flows.irrelevance import irrelevance_flow

    summary = run_flow_command(
        irrelevance_flow,
        as_json=as_json,
        store=store,
        config=config,
        profile=profile,
        seed=seed,
    )
    if summary is not None:
        show("irrelevance", summary.model_dump(mode="json"))


@app.command()
def diversify(
    store: StoreOpt = None,
    config: ConfigOpt = None,
    profile: ProfileOpt = None,
    variants: Annotated[
        int | None, typer.Option("--variants", help="Variants per task and mode.")
    ] = None,
    seed: SeedOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Rewrite kept tasks for other personas and with added constraints."""
    from flows.diversify import diversify_flow

    summary = run_flow_command(
        diversify_flow,
        as_json=as_json,
        store=store,
        config=config,
        profile=profile,
        variants=variants,
        seed=seed,
    )
    if summary is not None:
        show("diversify", summary.model_dump(mode="json"))


@app.command("multi-turn")
def multi_turn(
    store: StoreOpt = None,
    config: ConfigOpt = None,
    profile: ProfileOpt = None,
    method: Annotated[
        list[str] | None, typer.Option("--method", help="split and/or extend (default both).")
    ] = None,
    follow_ups: Annotated[
        int | None, typer.Option("--follow-ups", help="User turns to add when extending.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Multi-turn conversations: split multi-tool tasks, extend kept trajectories."""
    from flows.multi_turn import METHODS, multi_turn_flow

    if method and (bad := sorted(set(method) - set(METHODS))):
        fail(f"unknown method(s) {', '.join(bad)}; choose from {', '.join(METHODS)}")
    summary = run_flow_command(
        multi_turn_flow,
        as_json=as_json,
        store=store,
        config=config,
        profile=profile,
        methods=method,
        follow_ups=follow_ups,
    )
    if summary is not None:
        show("multi-turn", summary.model_dump(mode="json"))
