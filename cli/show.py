"""`toucan show TRAJECTORY_ID`: one trajectory, readably."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.panel import Panel
from rich.table import Table

from cli.app import ConfigOpt, JsonOpt, StoreOpt, app, console, fail, print_json
from toucan.config import load_settings
from toucan.records import Trajectory, TrajectoryRating
from toucan.store import Store

ROLE_STYLE = {"system": "dim", "user": "cyan", "assistant": "green", "tool": "yellow"}
SHOWN_CHARS = 2_000


@app.command()
def show(
    trajectory_id: Annotated[str, typer.Argument(help="A trajectory id (or a unique prefix).")],
    store: StoreOpt = None,
    config: ConfigOpt = None,
    full: Annotated[bool, typer.Option("--full", help="Do not shorten long messages.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Print one trajectory: header, messages in order, tool calls and their ratings."""
    target = Store(store or load_settings(config).store)
    rows = target.select(Trajectory, "starts_with(trajectory_id, ?)", [trajectory_id])
    if len(rows) != 1:
        fail(f"{len(rows)} trajectories match {trajectory_id!r}", "no_single_match")
    row = rows[0]
    ratings = target.select(TrajectoryRating, "trajectory_id = ?", [row.trajectory_id])
    if as_json:
        print_json(
            {
                "trajectory": row.model_dump(mode="json"),
                "ratings": [r.model_dump(mode="json") for r in ratings],
            }
        )
        return
    console.print(header_table(row))
    for index, message in enumerate(row.messages):
        console.print(message_panel(index, message, full))
    for rating in ratings:
        console.print(rating_table(rating))


def header_table(row: Trajectory) -> Table:
    table = Table(show_header=False, title=row.trajectory_id)
    for key, value in (
        ("task", row.task_id),
        ("kind", row.kind),
        ("teacher", f"{row.teacher} ({row.model})"),
        ("style", row.style),
        ("status", f"{row.status} {row.reason or ''}"),
        ("stop reason", row.stop_reason),
        ("turns", row.turns),
        ("tool calls", f"{row.tool_calls} ({row.tool_errors} errors)"),
        ("tokens", row.usage.total_tokens),
        ("cost $", f"{row.cost_usd:.5f}"),
        ("tools offered", len(row.tools)),
        ("started", row.started_at),
        ("finished", row.finished_at),
    ):
        table.add_row(key, str(value))
    return table


def shorten(text: str, full: bool) -> str:
    if full or len(text) <= SHOWN_CHARS:
        return text
    return text[:SHOWN_CHARS] + f"\n... [{len(text) - SHOWN_CHARS} more characters; --full]"


def message_panel(index: int, message: dict[str, Any], full: bool) -> Panel:
    role = message.get("role", "?")
    parts = [shorten(str(message.get("content") or ""), full)]
    for call in message.get("tool_calls") or []:
        function = call.get("function", {})
        parts.append(f"-> {function.get('name')}({function.get('arguments')})  [{call.get('id')}]")
    title = f"{index} {role}"
    if role == "tool":
        title += f" {message.get('name', '')} [{message.get('tool_call_id', '')}]"
    return Panel(
        "\n".join(p for p in parts if p),
        title=title,
        title_align="left",
        border_style=ROLE_STYLE.get(role, "white"),
    )


def rating_table(rating: TrajectoryRating) -> Table:
    table = Table(title=f"rating by {rating.judge}: keep={rating.keep} {rating.reason or ''}")
    table.add_column("check")
    table.add_column("value", overflow="fold")
    for name, fired in rating.flags.items():
        table.add_row(name, "[red]fired[/]" if fired else "ok")
    for name, score in rating.scores.items():
        table.add_row(name, f"{score.score}: {score.reasoning}")
    for name, value in rating.tool_accuracy.items():
        table.add_row(name, json.dumps(value))
    return table
