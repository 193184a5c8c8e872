"""`toucan status`: per-server and per-model throughput of the current or any past run, and
what the store's runs spent per stage and model."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Annotated

import typer
from rich.console import Group
from rich.live import Live
from rich.table import Table

from cli.app import JsonOpt, StoreOpt, app, console, fail, print_json
from toucan.status import (
    RunStatus,
    StageSpend,
    list_runs,
    read_run_status,
    read_store_spend,
)
from toucan.store import Store

REFRESH_S = 2.0


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _pair(p50: float | None, p95: float | None) -> str:
    return f"{_fmt(p50, 0)}/{_fmt(p95, 0)}"


def _name_width(names: Iterable[str]) -> int:
    """A name column as wide as its longest name (up to 32): names are never cut."""
    return min(32, max((len(name) for name in names), default=6))


def render_status(status: RunStatus) -> Group:
    """The rich view of one run: header (with the run's outcome when items errored or nothing
    came out), servers table, models table. A run whose process died shows as `crashed`."""
    progress = status.progress
    planned = f"/{progress.planned}" if progress.planned else ""
    fraction = f" ({progress.fraction:.0%})" if progress.fraction is not None else ""
    header = Table.grid(padding=(0, 2))
    header.add_row("run", status.run_id, "stage", status.stage, "status", status.status)
    header.add_row(
        "items",
        f"{progress.finished}{planned}{fraction}",
        "failed",
        str(progress.failed),
        "elapsed",
        f"{status.elapsed_s:.0f}s, {_fmt(status.items_per_min)} items/min",
    )
    outcome = status.summary.get("outcome") or {}
    if outcome.get("state") not in (None, "Completed"):  # flows/outcome.py
        header.add_row("outcome", outcome["state"], "", "", "", "")
        header.add_row("", outcome.get("message", ""), "", "", "", "")
    stopped = status.summary.get("stopped")
    header.add_row(
        "spent",
        f"${status.spent_usd:.4f}",
        "stopped" if stopped else "",
        f"{stopped} ({status.summary.get('not_started', 0)} not started)" if stopped else "",
    )
    servers = Table(title="per server", title_justify="left")
    servers.add_column(
        "server", no_wrap=True, min_width=_name_width(s.server for s in status.servers)
    )
    for col in ("done", "failed", "items/min", "p50/p95 ms", "tool calls", "tool p50/p95 ms"):
        servers.add_column(col, justify="right")
    servers.add_column("errors")
    for s in status.servers:
        servers.add_row(
            s.server,
            str(s.items_done),
            str(s.items_failed),
            _fmt(s.items_per_min),
            _pair(s.p50_ms, s.p95_ms),
            f"{s.tool_calls} ({s.tool_errors} err)" if s.tool_errors else str(s.tool_calls),
            _pair(s.tool_p50_ms, s.tool_p95_ms) if s.tool_calls else "-",
            ", ".join(f"{k}:{v}" for k, v in s.error_classes.items()),
        )
    models = Table(title="per model", title_justify="left")
    models.add_column("model", no_wrap=True, min_width=_name_width(m.model for m in status.models))
    for col in ("calls", "failed", "cached", "p50/p95 ms", "tokens/min", "cost $", "429s"):
        models.add_column(col, justify="right")
    for m in status.models:
        models.add_row(
            m.model,
            str(m.calls),
            str(m.failed),
            str(m.cached),
            _pair(m.p50_ms, m.p95_ms),
            _fmt(m.tokens_per_min, 0),
            f"{m.cost_usd:.4f}",
            str(m.rate_limited),
        )
    return Group(header, servers, models)


def render_spend(spend: list[StageSpend]) -> Table:
    """Spend per stage and model over every run on the store; cached replies cost nothing."""
    table = Table(title="spend per stage and model (all runs; cached replies are free)")
    for col in ("stage", "model", "paid calls", "cached", "spent $"):
        table.add_column(col, justify="left" if col in ("stage", "model") else "right")
    for row in spend:
        table.add_row(
            row.stage, row.model, str(row.paid_calls), str(row.cached_calls), f"{row.spent_usd:.4f}"
        )
    table.add_row("total", "", "", "", f"{sum(row.spent_usd for row in spend):.4f}")
    return table


def render_runs(store: Store) -> Table:
    table = Table(title="recent runs", title_justify="left")
    for col in ("run", "stage", "status", "started", "finished"):
        table.add_column(col)
    for run in list_runs(store, limit=10):
        table.add_row(
            run.run_id,
            run.stage,
            run.status,
            f"{run.started_at:%Y-%m-%d %H:%M:%S}",
            f"{run.finished_at:%H:%M:%S}" if run.finished_at else "-",
        )
    return table


@app.command("status")
def status_command(
    store: StoreOpt = None,
    run: Annotated[
        str | None, typer.Option("--run", help="A run id (default: the running or latest run).")
    ] = None,
    watch: Annotated[
        bool, typer.Option("--watch", help=f"Refresh every {REFRESH_S:.0f} s until the run ends.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Show items/min, latency, tool calls and errors per server, and calls, tokens/min,
    cost and 429s per model, for one run, read from the store (read-only)."""
    handle = Store(store)
    if not handle.path.exists():
        fail(f"no store at {handle.path}: run `toucan onboard` first", "no_store")
    current = read_run_status(handle, run)
    if current is None:
        fail(
            f"no run {run!r} in {handle.path}" if run else f"no runs yet in {handle.path}", "no_run"
        )
    if as_json and not watch:
        print_json(status_json(current, handle))
        return
    if not watch:
        console.print(render_status(current))
        console.print(render_spend(read_store_spend(handle)))
        console.print(render_runs(handle))
        return
    with Live(render_status(current), console=console, refresh_per_second=4) as live:
        while current.status == "running":
            time.sleep(REFRESH_S)
            refreshed = read_run_status(handle, current.run_id)
            if refreshed is None:
                break
            current = refreshed
            live.update(render_status(current))
    if as_json:
        print_json(status_json(current, handle))


def status_json(current: RunStatus, store: Store) -> dict[str, object]:
    """The run's status, plus `spend`: every run's spend on the store per stage and model."""
    return {**current.as_json(), "spend": [row.model_dump() for row in read_store_spend(store)]}
