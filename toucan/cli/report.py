"""`toucan report`: one self-contained HTML page of charts over the store."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from toucan.cli.app import ConfigOpt, JsonOpt, StoreOpt, app, console, fail, print_json
from toucan.config import load_settings
from toucan.errors import ToucanError
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
    from tasks.report import write_report

    try:
        target = Store(store or load_settings(config).store)
        if not target.path.exists():
            fail(f"no store at {target.path}: run `toucan onboard` first")
        counts = write_report(target, out)
    except ToucanError as exc:
        fail(str(exc))
        return
    if as_json:
        print_json({"out": str(out), **counts})
        return
    console.print(
        f"report with {counts['charts']} charts over {counts['servers']} servers, "
        f"{counts['tasks']} tasks, {counts['trajectories']} trajectories: {out}"
    )
