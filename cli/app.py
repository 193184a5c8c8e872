"""The typer app and the options every command shares."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from cli.failures import DEBUG_FLAG, ToucanGroup, debug_enabled, fail
from cli.prefect_env import configure_quiet_prefect
from cli.stopping import watch_for_termination
from toucan.interrupts import handle_signals
from toucan.secrets import blank_start_environment

__all__ = ["app", "console", "fail", "print_json"]

configure_quiet_prefect(verbose=debug_enabled())


class ToucanTyper(typer.Typer):
    """The app as a process runs it (the `toucan` script, `python -m cli`): SIGTERM then ends
    the process within seconds (cli/stopping.py). Tests that invoke commands in-process
    (typer's CliRunner) do not pass here."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        watch_for_termination()
        return super().__call__(*args, **kwargs)


app = ToucanTyper(
    name="toucan",
    cls=ToucanGroup,
    help="Synthesize tool-agentic training data from real MCP servers.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

console = Console(stderr=True)  # progress and tables; stdout stays clean for --json


@app.callback()
def _main(
    debug: Annotated[
        bool,
        typer.Option(
            DEBUG_FLAG,
            help="Show tracebacks and Prefect's run logs (also anywhere after the command, "
            "or TOUCAN_DEBUG=1).",
        ),
    ] = False,
) -> None:
    # ToucanGroup took --debug off the command line already (it may follow the command)
    if debug_enabled():
        configure_quiet_prefect(verbose=True)
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
