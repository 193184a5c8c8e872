"""`toucan irrelevance`, `toucan diversify`, `toucan multi-turn`: the three extensions."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from cli.app import console, fail
from cli.running import RunOptions, stage_command

SeedOpt = Annotated[int | None, typer.Option("--seed", help="Seed (default synthesize.seed).")]


def show(title: str, summary: Any) -> None:
    """A summary as a field / value table (nothing once --json has printed it)."""
    if summary is None:
        return
    table = Table(title=title)
    table.add_column("field")
    table.add_column("value", overflow="fold")
    for key, value in summary.model_dump(mode="json").items():
        table.add_row(key, str(value))
    console.print(table)


@stage_command()
def irrelevance(run: RunOptions, seed: SeedOpt = None) -> None:
    """Pair kept tasks with servers that cannot solve them (new `irrelevant` tasks)."""
    from flows.registry import irrelevance_flow

    show("irrelevance", run.flow(irrelevance_flow, seed=seed))


@stage_command()
def diversify(
    run: RunOptions,
    variants: Annotated[
        int | None, typer.Option("--variants", help="Variants per task and mode.")
    ] = None,
    seed: SeedOpt = None,
) -> None:
    """Rewrite kept tasks for other personas and with added constraints."""
    from flows.registry import diversify_flow

    show("diversify", run.flow(diversify_flow, variants=variants, seed=seed))


@stage_command("multi-turn")
def multi_turn(
    run: RunOptions,
    method: Annotated[
        list[str] | None, typer.Option("--method", help="split and/or extend (default both).")
    ] = None,
    follow_ups: Annotated[
        int | None, typer.Option("--follow-ups", help="User turns to add when extending.")
    ] = None,
) -> None:
    """Multi-turn conversations: split multi-tool tasks, extend kept trajectories."""
    from flows.multi_turn import METHODS
    from flows.registry import multi_turn_flow

    if method and (bad := sorted(set(method) - set(METHODS))):
        fail(f"unknown method(s) {', '.join(bad)}; choose from {', '.join(METHODS)}")
    show("multi-turn", run.flow(multi_turn_flow, methods=method, follow_ups=follow_ups))
