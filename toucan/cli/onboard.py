"""`toucan onboard`, `toucan servers`, `toucan tools`, `toucan fleet install`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from toucan.cli.app import ConfigOpt, JsonOpt, ProfileOpt, StoreOpt, app, console, fail, print_json
from toucan.cli.progress_view import progress_bars
from toucan.config import load_settings
from toucan.errors import ToucanError
from toucan.prefect_env import start_ephemeral_api
from toucan.records import Server, Tool
from toucan.store import Store

fleet_app = typer.Typer(help="The bundled offline fleet of real MCP servers.", no_args_is_help=True)
app.add_typer(fleet_app, name="fleet")


@app.command()
def onboard(
    catalog: Annotated[
        list[Path] | None,
        typer.Option("--catalog", help="Catalog file (YAML, JSON or Smithery JSONL); repeatable."),
    ] = None,
    store: StoreOpt = None,
    specs_only: Annotated[
        bool, typer.Option("--specs-only", help="Store declared tools without connecting.")
    ] = False,
    config: ConfigOpt = None,
    profile: ProfileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Onboard MCP servers: validate, check credentials, connect, list and probe tools."""
    from flows.onboard import onboard_flow

    start_ephemeral_api()
    try:
        with progress_bars(enabled=not as_json):
            result = onboard_flow(
                catalogs=[str(c) for c in catalog] if catalog else None,
                store=str(store) if store else None,
                specs_only=specs_only,
                config=str(config) if config else None,
                profile=profile,
            )
    except ToucanError as exc:
        fail(str(exc))
        return
    if as_json:
        print_json({"run_id": result.run_id, "servers": result.servers, "summary": result.summary})
        return
    table = Table(title=f"onboarding run {result.run_id}")
    for column in ("server", "transport", "status", "reason", "tools", "domain", "latency ms"):
        table.add_column(column, overflow="fold")
    for row in result.servers:
        style = "green" if row["status"] in ("ok", "specs_only") else "red"
        table.add_row(
            str(row["name"]),
            str(row["transport"]),
            f"[{style}]{row['status']}[/]",
            str(row["reason"] or ""),
            str(row["tools"]),
            str(row["domain"] or ""),
            "" if row["latency_ms"] is None else str(row["latency_ms"]),
        )
    console.print(table)
    s = result.summary
    console.print(
        f"{s['total']} servers: {s['ok']} ok, {s['rejected']} rejected; "
        f"{s['tools']} tools over {s['domains']} domains."
    )


@app.command()
def servers(store: StoreOpt = None, config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """List the servers in the store."""
    rows = Store(store or load_settings(config).store).select(Server, "true ORDER BY name")
    if as_json:
        print_json([r.model_dump(mode="json", exclude={"spec"}) for r in rows])
        return
    table = Table(title=f"{len(rows)} servers")
    for column in ("server", "source", "transport", "status", "reason", "tools", "domain"):
        table.add_column(column, overflow="fold")
    for r in rows:
        table.add_row(
            r.name,
            r.source,
            r.transport,
            r.status,
            r.reason or "",
            str(r.tool_count),
            r.domain or "",
        )
    console.print(table)


@app.command()
def tools(
    store: StoreOpt = None,
    config: ConfigOpt = None,
    server: Annotated[str | None, typer.Option(help="Only this server (name).")] = None,
    all_versions: Annotated[bool, typer.Option("--all-versions")] = False,
    as_json: JsonOpt = False,
) -> None:
    """List the tools in the store (current schema versions unless --all-versions)."""
    target = Store(store or load_settings(config).store)
    names = {s.server_id: s.name for s in target.select(Server)}
    where = "true" if all_versions else "current"
    rows = [
        t
        for t in target.select(Tool, where + " ORDER BY server_id, name")
        if server is None or names.get(t.server_id) == server
    ]
    if as_json:
        print_json([{**t.model_dump(mode="json"), "server": names.get(t.server_id)} for t in rows])
        return
    table = Table(title=f"{len(rows)} tools")
    for column in ("server", "tool", "version", "schema", "description"):
        table.add_column(column, overflow="fold")
    for t in rows:
        table.add_row(
            names.get(t.server_id, t.server_id),
            t.name,
            str(t.version),
            t.schema_hash,
            t.description[:80],
        )
    console.print(table)


@fleet_app.command("install")
def fleet_install(
    only: Annotated[list[str] | None, typer.Option("--only", help="Only these servers.")] = None,
    config: ConfigOpt = None,
) -> None:
    """Install the bundled fleet (idempotent; one venv or npm prefix per server)."""
    from mcp_env.fleet.install import install_fleet

    report = install_fleet(Path(load_settings(config).mcp.fleet_dir), only)
    console.print(report.summary_line() if hasattr(report, "summary_line") else str(report))
