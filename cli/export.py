"""`toucan export`: kept trajectories -> a dataset folder (parquet/JSONL/chat formats + card);
`toucan report`: one self-contained HTML page of charts over the store."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from cli.app import console, fail
from cli.running import RunOptions, stage_command
from toucan.config import load_settings
from toucan.store import Store


@stage_command()
def export(
    run: RunOptions,
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
) -> None:
    """Export kept trajectories in the Toucan-1.5M layout, scrubbed, with a dataset card."""
    from flows.registry import export_flow
    from tasks.export_formats import FORMATS

    chosen = formats or ["parquet"]
    if bad := sorted(set(chosen) - set(FORMATS)):
        fail(f"unknown format(s) {', '.join(bad)}; choose from {', '.join(FORMATS)}")
    if mix not in ("paper", "none"):
        fail(f"unknown mix {mix!r}; use paper or none")
    if out.exists() and any(out.iterdir()) and not overwrite:
        fail(f"{out} exists and is not empty; pass --overwrite to replace it", "already_exists")
    summary = run.flow(
        export_flow, out_dir=str(out), formats=chosen, mix=mix, overwrite=overwrite, seed=seed
    )
    if summary is None:
        return
    if summary.message:
        console.print(f"[yellow]{summary.message}[/]")
    table = Table(title=f"export to {out}")
    table.add_column("subset")
    table.add_column("rows", justify="right")
    for subset, count in summary.by_subset.items():
        table.add_row(subset, str(count))
    console.print(table)
    excluded = ", ".join(f"{k} {v}" for k, v in summary.excluded.items()) or "none"
    scrubbed = ", ".join(f"{k} {v}" for k, v in summary.scrubbed.items()) or "none"
    console.print(f"{summary.rows} rows written; excluded: {excluded}; scrubbed: {scrubbed}")
    console.print(f"dataset card: {out / 'README.md'}")


@stage_command()
def report(
    run: RunOptions,
    out: Annotated[Path, typer.Option("--out", help="HTML file to write.")] = Path(
        "out/report.html"
    ),
) -> None:
    """Write an HTML report (funnel, domains, task/trajectory shape, scores, servers, models)."""
    from flows.registry import report_flow

    target = Store(run.store or load_settings(run.config).store).path
    if not target.exists():
        fail(f"no store at {target}: run `toucan onboard` first", "no_store")
    summary = run.flow(report_flow, out=str(out))
    if summary is None:
        return
    console.print(
        f"report with {summary.charts} charts over {summary.servers} servers, "
        f"{summary.tasks} tasks, {summary.trajectories} trajectories: {out}"
    )
