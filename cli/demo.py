"""`toucan demo`: the whole pipeline, offline, on the bundled fleet and the embedded model."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from cli.app import app, console
from cli.progress_view import progress_bars
from toucan.config import FilterTrajectoriesConfig
from toucan.errors import ToucanError

DEMO_STORE = Path("data/demo.duckdb")
# Small on purpose: the embedded 135M model reads ~50-100 prompt tokens/s on one shared core.
DEMO_LIMITS = {"synthesize": 4, "filter_tasks": 40, "trajectories": 5, "filter_trajectories": 60}
# Extensions make new tasks; the second pass judges them and gives them trajectories: every
# stage from filter_tasks on, but the two that make tasks.
TASK_MAKERS = ("irrelevance", "diversify")
SUMMARY_KEYS = 6  # summary entries shown per stage


def demo_stage_params(store: Path, out: Path) -> dict[str, dict[str, Any]]:
    return {
        "export": {
            "out_dir": str(out / "dataset"),
            "formats": ["parquet", "jsonl", "openai", "sharegpt"],
            "overwrite": True,
        },
        "report": {"out": str(out / "report.html")},
    }


def describe_local_profile(settings: Any) -> list[str]:
    """What the `local` profile shrinks and loosens, said before the run starts."""
    budget = settings.models.prompt_budget
    trajectories = settings.filter_trajectories
    lowest = min(settings.filter_tasks.thresholds.values())
    default_flags = FilterTrajectoriesConfig().drop_flags
    kept_anyway = [flag for flag in default_flags if flag not in trajectories.drop_flags]
    return [
        f"local profile: {budget.tools_per_server} tools per server in task prompts, "
        f"{budget.offered_tools} tools offered per trajectory, descriptions cut to "
        f"{budget.description_chars} chars, replies capped at "
        f"{settings.models.local.max_tokens} tokens; demo limits {DEMO_LIMITS}",
        f"local profile keep thresholds loosened for the 135M judge: task scores >= {lowest}, "
        f"trajectory completeness >= {trajectories.min_completeness} and conciseness >= "
        f"{trajectories.min_conciseness}; the trajectory rules still drop "
        f"{', '.join(trajectories.drop_flags)}"
        + (f" (not: {', '.join(kept_anyway)})" if kept_anyway else ""),
    ]


def brief_summary(summary: dict[str, Any]) -> str:
    """The first few summary entries, scalars and small dicts, on one line."""
    shown = [(k, v) for k, v in summary.items() if k != "run_id"][:SUMMARY_KEYS]
    return ", ".join(f"{key}={value}" for key, value in shown)


def demo_passes() -> tuple[tuple[int, tuple[str, ...]], ...]:
    """(pass number, stage names): every stage of the registry, then the ones that judge and
    run the tasks the extensions made."""
    from flows.registry import STAGE_NAMES

    second = STAGE_NAMES[STAGE_NAMES.index("filter_tasks") :]
    return (1, STAGE_NAMES), (2, tuple(s for s in second if s not in TASK_MAKERS))


async def run_demo_stages(
    store: Path, out: Path, teachers: list[str]
) -> list[tuple[int, Any, float]]:
    """Each stage of both passes as its own `pipeline` run, with a line as it starts and ends;
    returns (pass, StageOutcome, seconds) per stage. Stops at the first failed stage."""
    from flows.pipeline import StageFailed, pipeline
    from flows.prefect_api import start_ephemeral_api

    params = demo_stage_params(store, out)
    start_ephemeral_api()
    results: list[tuple[int, Any, float]] = []
    demo_started = time.monotonic()
    for number, stages in demo_passes():
        for stage in stages:
            console.print(f"[pass {number}] {stage}: started", markup=False, highlight=False)
            started = time.monotonic()
            try:
                report = await pipeline(
                    stages=[stage],  # type: ignore[list-item]
                    store=str(store),
                    profile="local",
                    limits=DEMO_LIMITS,  # type: ignore[arg-type]
                    teachers=teachers,
                    stage_params=params,  # type: ignore[arg-type]
                    force=True,
                )
            except StageFailed as error:
                raise ToucanError(f"pass {number}: {error}") from error
            outcome = report.outcomes[0]
            seconds = time.monotonic() - started
            results.append((number, outcome, seconds))
            console.print(
                f"[pass {number}] {stage}: {outcome.outcome} in {seconds:.1f}s "
                f"(total {time.monotonic() - demo_started:.0f}s): {brief_summary(outcome.summary)}",
                markup=False,
                highlight=False,
                soft_wrap=True,
            )
    return results


def print_results(results: list[tuple[int, Any, float]], store: Path, out: Path) -> None:
    table = Table(title="demo pipeline")
    for column in ("pass", "stage", "outcome", "seconds", "summary"):
        table.add_column(column, overflow="fold")
    for number, outcome, seconds in results:
        summary = brief_summary(outcome.summary)
        table.add_row(str(number), outcome.stage, outcome.outcome, f"{seconds:.1f}", summary)
    console.print(table)
    total = sum(seconds for _, _, seconds in results)
    console.print(f"wall time: {total:.0f}s over {len(results)} stage runs")
    console.print(f"store:   {store}")
    console.print(f"dataset: {out / 'dataset'}  (parquet, JSONL, OpenAI and ShareGPT chat files)")
    console.print(f"report:  {out / 'report.html'}")


@app.command()
def demo(
    store: Annotated[Path, typer.Option("--store", help="Store for the demo run.")] = DEMO_STORE,
    out: Annotated[Path, typer.Option("--out", help="Where the dataset and report go.")] = Path(
        "out/demo"
    ),
) -> None:
    """Run the whole pipeline offline with the embedded defaults and say where results are."""
    from toucan.config import load_settings

    settings = load_settings(profile="local")
    # one teacher keeps the offline demo short; real runs use every configured teacher
    teachers = [settings.models.teachers[0].name]
    console.print(
        "[bold]toucan demo[/]: onboard -> synthesize -> filter-tasks -> trajectories -> "
        "filter-trajectories -> irrelevance, diversify, multi-turn -> export -> report, "
        "offline, profile `local` (embedded model)."
    )
    for line in describe_local_profile(settings):
        console.print(line, markup=False, highlight=False, soft_wrap=True)
    with progress_bars():
        results = asyncio.run(run_demo_stages(store, out, teachers))
    print_results(results, store, out)
