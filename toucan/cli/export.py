"""`toucan export`: kept trajectories -> a dataset folder (parquet/JSONL/chat formats + card)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from toucan.cli.app import ConfigOpt, JsonOpt, ProfileOpt, StoreOpt, app, console, fail, print_json
from toucan.cli.progress_view import progress_bars
from toucan.errors import ToucanError
from toucan.prefect_env import start_ephemeral_api


@app.command()
def export(
    out: Annotated[Path, typer.Option("--out", help="Output folder for the dataset.")],
    formats: Annotated[
        list[str] | None,
        typer.Option(
            "--format", help="parquet | jsonl | openai | sharegpt; repeatable (default parquet)."
        ),
    ] = None,
    mix: Annotated[
        str, typer.Option("--mix", help="paper = the paper's SFT subset proportions; none = all.")
    ] = "none",
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing output folder.")
    ] = False,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the mix sampling.")] = 0,
    store: StoreOpt = None,
    config: ConfigOpt = None,
    profile: ProfileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Export kept trajectories in the Toucan-1.5M layout, scrubbed, with a dataset card."""
    from flows.export import export_flow
    from tasks.export_formats import FORMATS

    chosen = formats or ["parquet"]
    if bad := sorted(set(chosen) - set(FORMATS)):
        fail(f"unknown format(s) {', '.join(bad)}; choose from {', '.join(FORMATS)}")
    if mix not in ("paper", "none"):
        fail(f"unknown mix {mix!r}; use paper or none")
    if out.exists() and any(out.iterdir()) and not overwrite:
        fail(f"{out} exists and is not empty; pass --overwrite to replace it")
    start_ephemeral_api()
    try:
        with progress_bars(enabled=not as_json):
            summary = export_flow(
                out_dir=str(out),
                formats=chosen,
                mix=mix,
                overwrite=overwrite,
                seed=seed,
                store_path=str(store) if store else None,
                config=str(config) if config else None,
                profile=profile,
            )
    except (ToucanError, FileExistsError, ValueError) as exc:
        fail(str(exc))
        return
    if as_json:
        print_json(summary)
        return
    if summary["message"]:
        console.print(f"[yellow]{summary['message']}[/]")
    table = Table(title=f"export to {out}")
    table.add_column("subset")
    table.add_column("rows", justify="right")
    for subset, count in summary["by_subset"].items():
        table.add_row(subset, str(count))
    console.print(table)
    excluded = ", ".join(f"{k} {v}" for k, v in summary["excluded"].items()) or "none"
    scrubbed = ", ".join(f"{k} {v}" for k, v in summary["scrubbed"].items()) or "none"
    console.print(f"{summary['rows']} rows written; excluded: {excluded}; scrubbed: {scrubbed}")
    console.print(f"dataset card: {out / 'README.md'}")
