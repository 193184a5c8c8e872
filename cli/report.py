"""`toucan report`: one self-contained HTML page of charts over the store."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cli.app import ConfigOpt, JsonOpt, StoreOpt, app, console, fail
from cli.running import run_flow_command
from toucan.config import load_settings
from toucan.store import Store


@app.command()
def report(
    out: Annotated[Path, typer.Option("--out", help="HTML file to write.")] = Path(
        "out/report.html"
    ),
    store: StoreOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Write an HTML report (funnel, domains, task/trajectory shape, scores, servers, models)."""
    from flows.report import report_flow

    target = Store(store or load_settings(config).store).path
    if not target.exists():
        fail(f"no store at {target}: run `toucan onboard` first")
    summary = run_flow_command(
        report_flow, as_json=as_json, store=target, config=config, out=str(out)
    )
    if summary is None:
        return
    console.print(
        f"report with {summary.charts} charts over {summary.servers} servers, "
        f"{summary.tasks} tasks, {summary.trajectories} trajectories: {out}"
    )
