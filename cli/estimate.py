"""`toucan estimate`: what the stages that would run will cost, before any model is asked."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from cli.app import ConfigOpt, JsonOpt, ProfileOpt, StoreOpt, app, console, fail, print_json
from toucan.errors import ToucanError


@app.command("estimate")
def estimate_command(
    stage: Annotated[
        list[str] | None,
        typer.Option(
            "--stage",
            help="A stage to estimate (repeatable; default: the stages the pipeline would run).",
        ),
    ] = None,
    limit: Annotated[
        int | None, typer.Option("--limit", help="Items per stage, as a run's.")
    ] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Seed of the synthesis plan.")] = None,
    store: StoreOpt = None,
    config: ConfigOpt = None,
    profile: ProfileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Items, prompt and completion tokens, dollars (low / expected / high) and wall time per
    stage and model, from each stage's real plan, its prompts counted with each deployment's
    tokenizer and the store's history. Sends no model call and writes nothing."""
    from flows.completion import stage_kwargs
    from flows.estimate import estimate_run
    from flows.pipeline import plan_stages
    from flows.registry import STAGE_NAMES
    from flows.registry import stage as stage_def
    from toucan.config import load_settings
    from toucan.store import Store

    try:
        settings = load_settings(str(config) if config else None, profile=profile)
        handle = Store(store or settings.store)
        if stage:
            chosen = {stage_def(name).name for name in stage}
            names = [name for name in STAGE_NAMES if name in chosen]
        else:
            names, _ = plan_stages(handle, list(STAGE_NAMES), settings=settings)
        offered = {"limit": limit, "seed": seed}
        params = {name: stage_kwargs(stage_def(name).flow, offered) for name in names}
        estimate = estimate_run(handle, settings, names, params)
    except ToucanError as error:
        fail(str(error))
    if as_json:
        print_json(estimate.model_dump(mode="json"))
        return
    print_estimate(estimate)


def print_estimate(estimate: object) -> None:
    from toucan.estimate import TABLE_COLUMNS, Estimate, estimate_table, format_usd

    assert isinstance(estimate, Estimate)
    if not estimate.stages:
        console.print("nothing to estimate: every stage is complete (name one with --stage)")
        return
    table = Table(title=f"estimate for {estimate.store}", title_justify="left")
    for column in TABLE_COLUMNS:
        table.add_column(column, justify="left" if column in ("stage", "model") else "right")
    for row in estimate_table(estimate):
        table.add_row(*row.values())
    console.print(table)
    for stage in estimate.stages:
        notes = [*stage.notes, *(f"{m.deployment}: {n}" for m in stage.models for n in m.notes)]
        if not stage.calls_models:
            notes = ["calls no model"]
        for note in notes:
            console.print(f"[dim]{stage.stage}: {note}[/]")
    if estimate.unpriced:
        known = format_usd(estimate.known_usd().expected)
        console.print(
            f"unpriced (their cost is unknown, not $0): {', '.join(estimate.unpriced)}; "
            f"the priced part comes to ${known}. Set input_cost_per_token and "
            "output_cost_per_token on these deployments to price them."
        )
