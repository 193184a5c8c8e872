"""`toucan deploy` registers the Prefect deployments; `toucan server` runs a local Prefect
server (SQLite) plus a worker for them, in the foreground."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from cli.app import JsonOpt, app, console, fail, print_json

PoolOpt = Annotated[str, typer.Option("--pool", help="Work pool (process type) to use.")]


def register_and_show(
    pool: str, schedules: bool, only: list[str] | None, as_json: bool, workdir: Path | None
) -> None:
    from deployments.definitions import register_deployments

    registered = register_deployments(
        work_pool=pool, schedules_active=schedules, only=only, working_dir=workdir
    )
    if as_json:
        print_json({"work_pool": pool, "deployments": {k: str(v) for k, v in registered.items()}})
        return
    for name, deployment_id in registered.items():
        console.print(f"registered [bold]{name}[/] ({deployment_id})")
    console.print(
        f"start a worker with `prefect worker start --pool {pool}`; "
        "run one with `prefect deployment run pipeline/pipeline`"
    )


@app.command("deploy")
def deploy_command(
    pool: PoolOpt = "toucan",
    schedules: Annotated[
        bool, typer.Option("--schedules", help="Turn the example schedules on (off by default).")
    ] = False,
    only: Annotated[
        list[str] | None, typer.Option("--only", help="Register only these flows (repeatable).")
    ] = None,
    workdir: Annotated[
        Path | None,
        typer.Option("--workdir", help="Where the worker runs flows (default: this directory)."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Register one deployment per stage flow plus `pipeline` against PREFECT_API_URL."""
    if not os.environ.get("PREFECT_API_URL"):
        fail(
            "PREFECT_API_URL is not set: deployments need a running Prefect server. "
            "Start one with `toucan server`, or export PREFECT_API_URL=http://HOST:4200/api",
            "no_prefect_api",
        )
    try:
        register_and_show(pool, schedules, only, as_json, workdir)
    except Exception as exc:  # the CLI edge: an unreachable API is a message, not a traceback
        fail(
            f"could not register deployments at {os.environ['PREFECT_API_URL']}: {exc}",
            "prefect_api_error",
            code=1,
        )


@app.command("server")
def server_command(
    host: Annotated[str, typer.Option("--host")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port")] = 4200,
    pool: PoolOpt = "toucan",
    deploy: Annotated[
        bool, typer.Option("--deploy/--no-deploy", help="Register the deployments once up.")
    ] = True,
    ui: Annotated[bool, typer.Option("--ui/--no-ui", help="Serve the Prefect UI.")] = True,
    home: Annotated[
        Path | None,
        typer.Option("--home", help="PREFECT_HOME for the SQLite database (default ~/.prefect)."),
    ] = None,
    poll_seconds: Annotated[float, typer.Option("--poll-seconds")] = 5.0,
) -> None:
    """Start a local Prefect server and a process worker for the toucan pool; Ctrl-C stops both."""
    from deployments.local_server import LocalPrefect, serve

    config = LocalPrefect(
        host=host,
        port=port,
        pool=pool,
        home=home,
        ui=ui,
        poll_seconds=poll_seconds,
        workdir=Path.cwd(),
    )

    def on_ready(ready: LocalPrefect) -> None:
        from prefect.settings import PREFECT_API_URL, temporary_settings

        with temporary_settings(updates={PREFECT_API_URL: ready.api_url}):
            from deployments.definitions import ensure_work_pool

            ensure_work_pool(ready.pool)
            if deploy:
                register_and_show(ready.pool, False, None, False, ready.workdir)

    try:
        code = serve(config, on_ready, lambda line: console.print(line))
    except (RuntimeError, TimeoutError) as exc:
        fail(str(exc), "server_start_failed", code=1)
    raise typer.Exit(code)
