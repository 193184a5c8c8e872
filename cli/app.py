"""The typer app and the options every command shares."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console

from cli.prefect_env import configure_quiet_prefect
from toucan.interrupts import handle_signals
from toucan.secrets import blank_start_environment

configure_quiet_prefect()

app = typer.Typer(
    name="toucan",
    help="Synthesize tool-agentic training data from real MCP servers.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

console = Console(stderr=True)  # progress and tables; stdout stays clean for --json


@app.callback()
def _main() -> None:
    handle_signals()
    # before anything is started: a child could read our keys at /proc/<pid>/environ
    blank_start_environment()


StoreOpt = Annotated[
    Path | None, typer.Option("--store", help="DuckDB file (env TOUCAN_STORE).", show_default=False)
]
ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", help="YAML settings file (env TOUCAN_CONFIG).", show_default=False),
]
ProfileOpt = Annotated[
    str | None,
    typer.Option("--profile", help="Settings profile: local, cloud, ... (env TOUCAN_PROFILE)."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")]


def print_json(payload: Any) -> None:
    sys.stdout.write(json.dumps(payload, indent=2, default=str) + "\n")
    sys.stdout.flush()


def fail(message: str, code: int = 2) -> NoReturn:
    console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)
