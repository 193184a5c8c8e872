"""`toucan demo`: the whole pipeline, offline, on the bundled fleet and the embedded model."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from toucan.cli.app import app, console, fail
from toucan.cli.progress_view import progress_bars
from toucan.errors import ToucanError

DEMO_STORE = Path("data/demo.duckdb")
# Small on purpose: the embedded 135M model writes ~10 tokens/s on a shared 2-core machine.
DEMO_LIMITS = {"synthesize": 4, "filter_tasks": 40, "trajectories": 6, "filter_trajectories": 60}
# Extensions make new tasks; the second pass judges them and gives them trajectories.
SECOND_PASS = [
    "filter_tasks",
    "trajectories",
    "filter_trajectories",
    "multi_turn",
    "export",
    "report",
]


def demo_stage_params(store: Path, out: Path) -> dict[str, dict[str, Any]]:
    return {
        "export": {
            "out_dir": str(out / "dataset"),
            "formats": ["parquet", "jsonl", "openai", "sharegpt"],
            "overwrite": True,
            "store_path": str(store),
        },
        "report": {"out": str(out / "report.html")},
    }


@app.command()
def demo(
    store: Annotated[Path, typer.Option("--store", help="Store for the demo run.")] = DEMO_STORE,
    out: Annotated[Path, typer.Option("--out", help="Where the dataset and report go.")] = Path(
        "out/demo"
    ),
) -> None:
    """Run the whole pipeline offline with the embedded defaults and say where results are."""
    from flows.pipeline import pipeline
    from toucan.config import load_settings

    params = demo_stage_params(store, out)
    # one teacher keeps the offline demo short; real runs use every configured teacher
    teachers = [load_settings(profile="local").models.teachers[0].name]
    console.print(
        "[bold]toucan demo[/]: onboard -> synthesize -> filter-tasks -> trajectories -> "
        "filter-trajectories -> irrelevance, diversify, multi-turn -> export -> report, "
        "offline, profile `local` (embedded model)."
    )
    try:
        with progress_bars():
            first = asyncio.run(
                pipeline(
                    store=str(store),
                    profile="local",
                    limits=DEMO_LIMITS,  # type: ignore[arg-type]
                    teachers=teachers,
                    stage_params=params,
                    force=True,
                )
            )
            second = asyncio.run(
                pipeline(
                    stages=SECOND_PASS,
                    store=str(store),
                    profile="local",  # type: ignore[arg-type]
                    limits=DEMO_LIMITS,
                    teachers=teachers,
                    stage_params=params,
                    force=True,
                )
            )
    except ToucanError as exc:
        fail(str(exc))
        return
    table = Table(title="demo pipeline")
    for column in ("pass", "stage", "outcome", "summary"):
        table.add_column(column, overflow="fold")
    for number, report in ((1, first), (2, second)):
        for outcome in report.outcomes:
            brief = ", ".join(f"{k}={v}" for k, v in list(outcome.summary.items())[:6])
            table.add_row(str(number), outcome.stage, outcome.outcome, brief)
    console.print(table)
    console.print(f"store:   {store}")
    console.print(f"dataset: {out / 'dataset'}  (parquet, JSONL, OpenAI and ShareGPT chat files)")
    console.print(f"report:  {out / 'report.html'}")
