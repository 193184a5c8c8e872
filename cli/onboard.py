"""`toucan onboard`, `toucan servers`, `toucan tools`, `toucan fleet install`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from cli.app import ConfigOpt, JsonOpt, StoreOpt, app, console, print_json
from cli.running import RunOptions, stage_command
from toucan.config import load_settings
from toucan.records import Server, Tool, ToolRejection
from toucan.store import Store

fleet_app = typer.Typer(help="The bundled offline fleet of real MCP servers.", no_args_is_help=True)
app.add_typer(fleet_app, name="fleet")


@stage_command()
def onboard(
    run: RunOptions,
    catalog: Annotated[
        list[Path] | None,
        typer.Option("--catalog", help="Catalog file (YAML, JSON or Smithery JSONL); repeatable."),
    ] = None,
    specs_only: Annotated[
        bool, typer.Option("--specs-only", help="Store declared tools without connecting.")
    ] = False,
) -> None:
    """Onboard MCP servers: validate, check credentials, connect, list and probe tools."""
    from flows.registry import onboard_flow

    catalogs = [str(c) for c in catalog] if catalog else None
    result = run.flow(onboard_flow, catalogs=catalogs, specs_only=specs_only)
    if result is None:
        return
    console.print(onboarding_table(result.run_id, result.servers))
    s = result.summary
    console.print(
        f"{s['total']} servers: {s['ok']} ok, {s['rejected']} rejected; "
        f"{s['tools']} tools over {s['domains']} domains."
    )


def onboarding_table(run_id: str, server_rows: list[dict[str, object]]) -> Table:
    """One line per onboarded server; the transport shown is the one that worked."""
    table = Table(title=f"onboarding run {run_id}")
    columns = ("server", "transport", "status", "reason", "tools", "notes", "domain", "latency ms")
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in server_rows:
        style = "green" if row["status"] in ("ok", "specs_only") else "red"
        table.add_row(
            str(row["name"]),
            str(row["transport_used"] or row["transport"]),
            f"[{style}]{row['status']}[/]",
            str(row["reason"] or ""),
            str(row["tools"]),
            describe_notes(row["notes"], len(row["rejected_tools"])),  # type: ignore[arg-type]
            str(row["domain"] or ""),
            "" if row["latency_ms"] is None else str(row["latency_ms"]),
        )
    return table


@app.command()
def servers(store: StoreOpt = None, config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """List the servers in the store."""
    rows = Store(store or load_settings(config).store).select(Server, "true ORDER BY name")
    if as_json:
        print_json([r.model_dump(mode="json", exclude={"spec"}) for r in rows])
        return
    table = Table(title=f"{len(rows)} servers")
    for column in ("server", "source", "transport", "status", "reason", "tools", "notes", "domain"):
        table.add_column(column, overflow="fold")
    for r in rows:
        table.add_row(
            r.name,
            r.source,
            r.transport_used or r.transport,
            r.status,
            r.reason or "",
            str(r.tool_count),
            describe_notes(r.notes, len(r.rejected_tools)),
            r.domain or "",
        )
    console.print(table)


def describe_notes(notes: list[str], rejected: int) -> str:
    """A server's notes for a table cell, with how many of its tools were rejected."""
    return ", ".join([*notes, *([f"{rejected} tool(s) rejected"] if rejected else [])])


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
    servers_by_id = {s.server_id: s for s in target.select(Server)}
    names = {server_id: s.name for server_id, s in servers_by_id.items()}
    where = "true" if all_versions else "current"
    rows = [
        t
        for t in target.select(Tool, where + " ORDER BY server_id, name")
        if server is None or names.get(t.server_id) == server
    ]
    rejected = [
        (s.name, rejection)
        for s in sorted(servers_by_id.values(), key=lambda s: s.name)
        for rejection in s.rejected_tools
        if server is None or s.name == server
    ]
    if as_json:
        print_json(
            [{**t.model_dump(mode="json"), "server": names.get(t.server_id)} for t in rows]
            + [{"server": name, "status": "rejected", **r.model_dump()} for name, r in rejected]
        )
        return
    console.print(tools_table(rows, rejected, names))


def tools_table(
    rows: list[Tool], rejected: list[tuple[str, ToolRejection]], names: dict[str, str]
) -> Table:
    """Usable tools (ok, or repaired with the repair tokens), then the rejected ones."""
    table = Table(title=f"{len(rows)} tools, {len(rejected)} rejected")
    for column in ("server", "tool", "version", "status", "schema", "description"):
        table.add_column(column, overflow="fold")
    for t in rows:
        status = "repaired: " + ", ".join(t.repairs) if t.repairs else "ok"
        table.add_row(
            names.get(t.server_id, t.server_id),
            t.name,
            str(t.version),
            status,
            t.schema_hash,
            t.description[:80],
        )
    for name, rejection in rejected:
        status = f"[red]rejected: {rejection.reason}[/]"
        table.add_row(name, rejection.name, "", status, "", rejection.detail[:80])
    return table


@fleet_app.command("install")
def fleet_install(
    only: Annotated[list[str] | None, typer.Option("--only", help="Only these servers.")] = None,
    config: ConfigOpt = None,
) -> None:
    """Install the bundled fleet (idempotent; one venv or npm prefix per server)."""
    from mcp_env.fleet.install import install_fleet

    report = install_fleet(Path(load_settings(config).mcp.fleet_dir), only)
    console.print(report.summary_line() if hasattr(report, "summary_line") else str(report))
