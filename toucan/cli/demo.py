"""`toucan demo`: the whole pipeline, offline, on the bundled fleet and the embedded model."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Annotated

import typer

from toucan.cli.app import app, console, fail
from toucan.cli.progress_view import progress_bars
from toucan.errors import ToucanError

DEMO_STORE = Path("data/demo.duckdb")


@app.command()
def demo(
    store: Annotated[Path, typer.Option("--store", help="Store for the demo run.")] = DEMO_STORE,
    out: Annotated[Path, typer.Option("--out", help="Where the dataset and report go.")] = Path(
        "out/demo"
    ),
) -> None:
    """Run every stage that exists, offline, with the embedded defaults, and say where the
    results are."""
    if importlib.util.find_spec("flows.pipeline") is not None:
        from flows.pipeline import run_demo

        try:
            with progress_bars():
                run_demo(store=str(store), out=str(out))
        except ToucanError as exc:
            fail(str(exc))
        return
    from flows.onboard import onboard_flow

    console.print("[bold]toucan demo[/]: stage 1 (onboarding) is what exists so far; running it.")
    try:
        with progress_bars():
            result = onboard_flow(store=str(store))
    except ToucanError as exc:
        fail(str(exc))
        return
    s = result.summary
    console.print(
        f"onboarded {s['ok']}/{s['total']} servers, {s['tools']} tools, {s['domains']} domains "
        f"into {store}. See them with `toucan servers --store {store}`."
    )
