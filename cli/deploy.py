"""`toucan deploy` registers the Prefect deployments; `toucan server` runs a local Prefect
server (SQLite) plus a worker for them, in the foreground."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cli.app import JsonOpt, app, console, fail, print_json

PoolOpt = Annotated[str, typer.Option("--pool", help="Work pool (process type) to use.")]
ProjectOpt = Annotated[
    Path | None,
    typer.Option(
        "--project-dir",
        "--workdir",
        help="Where the worker runs flows; relative settings paths are taken from here "
        "(default: env TOUCAN_PROJECT_DIR, else this directory when it holds a toucan.yaml "
        "or .fleet, else the toucan checkout).",
    ),
]


def register_and_show(
    pool: str,
    schedules: bool,
    only: list[str] | None,
    as_json: bool,
    workdir: Path | None,
    *,
    worker_starting: bool = False,
) -> None:
    """Register the deployments and say so; `worker_starting`: `toucan server` starts the
    pool's worker itself, so the operator is not told to start one."""
    from deployments.definitions import register_deployments

    registered = register_deployments(
        work_pool=pool, schedules_active=schedules, only=only, working_dir=workdir
    )
    if as_json:
        print_json({"work_pool": pool, "deployments": {k: str(v) for k, v in registered.items()}})
        return
    for name, deployment_id in registered.items():
        console.print(f"registered [bold]{name}[/] ({deployment_id})")
    run_one = "run one from the UI or with `prefect deployment run pipeline/pipeline`"
    if worker_starting:
        console.print(f"a worker for pool '{pool}' starts next; {run_one}")
    else:
        console.print(f"start a worker with `prefect worker start --pool {pool}`; {run_one}")


def prefect_api_url() -> str | None:
    """The API URL the way Prefect finds it: PREFECT_API_URL in the environment, else the
    active profile's (`prefect config set PREFECT_API_URL=...`); None when neither sets one."""
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value() or None


@app.command("deploy")
def deploy_command(
    pool: PoolOpt = "toucan",
    schedules: Annotated[
        bool, typer.Option("--schedules", help="Turn the example schedules on (off by default).")
    ] = False,
    only: Annotated[
        list[str] | None, typer.Option("--only", help="Register only these flows (repeatable).")
    ] = None,
    workdir: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Register one deployment per stage flow plus `pipeline` against the Prefect API
    (PREFECT_API_URL from the environment, else from the active Prefect profile)."""
    api_url = prefect_api_url()
    if api_url is None:
        fail(
            "no Prefect API URL: deployments need a running Prefect server. Start one with "
            "`toucan server`, or point at one with `prefect config set "
            "PREFECT_API_URL=http://HOST:4200/api` (or the environment variable)",
            "no_prefect_api",
        )
    try:
        register_and_show(pool, schedules, only, as_json, workdir)
    except Exception as exc:  # the CLI edge: an unreachable API is a message, not a traceback
        fail(f"could not register deployments at {api_url}: {exc}", "prefect_api_error", code=1)


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
    project_dir: ProjectOpt = None,
) -> None:
    """Start a local Prefect server and a process worker for the toucan pool; Ctrl-C stops both."""
    from deployments.definitions import find_project_dir
    from deployments.local_server import LocalPrefect, serve

    config = LocalPrefect(
        host=host,
        port=port,
        pool=pool,
        home=home,
        ui=ui,
        poll_seconds=poll_seconds,
        workdir=find_project_dir(project_dir),
    )

    def on_ready(ready: LocalPrefect) -> None:
        from prefect.settings import PREFECT_API_URL, temporary_settings

        with temporary_settings(updates={PREFECT_API_URL: ready.api_url}):
            from deployments.definitions import ensure_work_pool

            ensure_work_pool(ready.pool)
            if deploy:
                register_and_show(
                    ready.pool, False, None, False, ready.workdir, worker_starting=True
                )

    try:
        code = serve(config, on_ready, lambda line: console.print(line))
    except (RuntimeError, TimeoutError) as exc:
        fail(str(exc), "server_start_failed", code=1)
    raise typer.Exit(code)
