"""Render the measured fleet table into mcp_env/fleet/README.md (between marker comments)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mcp_env.fleet.check import ServerCheck

README_PATH = Path(__file__).resolve().parent / "README.md"
BEGIN, END = "<!-- fleet-table:begin -->", "<!-- fleet-table:end -->"


def render_fleet_table(specs: list[dict[str, Any]], checks: list[ServerCheck]) -> str:
    by_name = {check.name: check for check in checks}
    rows = [
        "| server | package | domain | tools | transport | sandboxed | start ms | probe |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for spec in specs:
        check = by_name.get(spec["name"])
        if check is None:
            continue
        launch = spec.get("launch") or spec
        isolated = " (isolated)" if (launch.get("sandbox") or {}).get("isolate") else ""
        rows.append(
            f"| {spec['name']} | `{spec['package']}` | {spec['domain']} | "
            f"{len(check.tools) if check.ok else 'FAILED'} | {spec['transport']} | "
            f"{check.sandbox_mode or '-'}{isolated} | "
            f"{check.start_ms} | {'ok' if check.probe_ok else 'FAILED'} |"
        )
    working = [check for check in checks if check.ok]
    domains = {
        spec["domain"] for spec in specs if by_name.get(spec["name"], ServerCheck(name="")).ok
    }
    rows.append(
        f"\n{len(working)}/{len(checks)} servers start, {sum(len(c.tools) for c in working)} tools, "
        f"{len(domains)} domains."
    )
    return "\n".join(rows)


def update_readme_table(specs: list[dict[str, Any]], checks: list[ServerCheck]) -> None:
    text = README_PATH.read_text()
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    table = render_fleet_table(specs, checks)
    README_PATH.write_text(f"{head}{BEGIN}\n{table}\n{END}{tail}")
