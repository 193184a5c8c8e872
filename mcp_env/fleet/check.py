"""Start fleet servers as the pipeline does and measure them: tools, start time, probe call.

`python -m mcp_env.fleet.check [--fleet-dir .fleet] [--only NAME ...] [--readme]` prints one line
per server and, with --readme, rewrites the table in mcp_env/fleet/README.md. Each server runs
in its sandbox (`open_session`), stdio servers without network, so a pass also shows that the
server starts under the sandbox and needs no network.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
from pydantic import BaseModel, Field

from mcp_env.fleet.catalog import load_fleet_catalog
from mcp_env.session import AnySpec, McpSession, open_session
from mcp_env.specs import StdioSpec, parse_server_spec

START_TIMEOUT_S = 60.0  # a cold Python server can take ~15 s before its .pyc files exist
CALL_TIMEOUT_S = 30.0


class ServerCheck(BaseModel):
    name: str
    transport: str = "stdio"
    offline: bool = False  # ran with no network
    sandbox_mode: str = ""  # bwrap | helper (Launch.sandbox_mode)
    ok: bool = False
    tools: list[str] = Field(default_factory=list)
    start_ms: int = 0  # spawn -> initialized
    probe_ok: bool = False
    probe_text: str = ""
    error: str = ""


def offline(spec: AnySpec) -> AnySpec:
    """A stdio spec with its network taken away, to prove the server needs none (an HTTP
    server's launch must share loopback with us, so it keeps the network)."""
    if not isinstance(spec, StdioSpec):
        return spec
    return spec.model_copy(update={"sandbox": spec.sandbox.model_copy(update={"network": False})})


async def check_server(
    raw_spec: dict[str, Any], seed_dir: Path, work_dir: Path, without_network: bool = True
) -> ServerCheck:
    """Start one server the way the pipeline does (`open_session`: its sandbox under work_dir,
    seeds copied), list its tools, run its probe. Never raises: failures are in `error`."""
    spec = parse_server_spec(raw_spec)
    spec = offline(spec) if without_network else spec
    check = ServerCheck(name=spec.name, transport=spec.transport)
    check.offline = without_network and isinstance(spec, StdioSpec)
    started = time.monotonic()
    try:
        with anyio.fail_after(START_TIMEOUT_S + CALL_TIMEOUT_S * 2):
            async with open_session(
                spec,
                sandbox_root=work_dir,
                seed_dir=seed_dir,
                fleet_dir=seed_dir.parent,
                connect_timeout=START_TIMEOUT_S,
            ) as session:
                check.start_ms = int((time.monotonic() - started) * 1000)
                check.sandbox_mode = session.sandbox_mode or ""
                check.tools = [tool.name for tool in await session.list_tools()]
                check.ok = bool(check.tools)
                if spec.probe:
                    await run_probe(session, spec.probe, check)
    except Exception as exc:  # a broken server is a result of the check, not a crash of it
        check.error = f"{type(exc).__name__}: {exc}"[-1000:]
    return check


async def run_probe(session: McpSession, probe: dict[str, Any], check: ServerCheck) -> None:
    result = await session.call_tool(
        probe["tool"], probe.get("arguments", {}), timeout=CALL_TIMEOUT_S
    )
    check.probe_text = result.text.replace("\n", " ")[:160]
    check.probe_ok = not result.is_error and "error" not in check.probe_text.lower()[:40]


async def check_fleet(
    fleet_dir: Path, only: list[str] | None = None, concurrency: int = 1
) -> list[ServerCheck]:
    """Check catalog servers, `concurrency` at a time (1 when start times are being measured)."""
    seed_dir = Path(fleet_dir).resolve() / "seed"
    specs = [spec for spec in load_fleet_catalog(fleet_dir) if not only or spec["name"] in only]
    checks: dict[str, ServerCheck] = {}
    limiter = anyio.Semaphore(concurrency)

    async def check_one(spec: dict[str, Any], work_dir: Path) -> None:
        async with limiter:
            check = await check_server(spec, seed_dir, work_dir)
        print(
            f"[check] {check.name}: ok={check.ok} tools={len(check.tools)} start={check.start_ms}ms "
            f"probe={check.probe_ok} {check.probe_text[:80]!r} {check.error[:300]}",
            flush=True,
        )
        checks[check.name] = check

    with tempfile.TemporaryDirectory(prefix="fleet-check-") as work_dir:
        async with anyio.create_task_group() as group:
            for spec in specs:
                group.start_soon(check_one, spec, Path(work_dir))
    return [checks[spec["name"]] for spec in specs]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Start each fleet server and measure it.")
    parser.add_argument("--fleet-dir", type=Path, default=Path(".fleet"))
    parser.add_argument("--only", nargs="*", default=None)
    parser.add_argument("--json", type=Path, default=None, help="also write the checks here")
    parser.add_argument("--readme", action="store_true", help="rewrite the README table")
    args = parser.parse_args(argv)
    checks = asyncio.run(check_fleet(args.fleet_dir, args.only))
    if args.readme:
        from mcp_env.fleet.readme import update_readme_table  # readme imports this module

        update_readme_table(load_fleet_catalog(args.fleet_dir), checks)
    if args.json:
        args.json.write_text(json.dumps([c.model_dump() for c in checks], indent=1))
    print(
        f"[check] {sum(c.ok for c in checks)}/{len(checks)} ok, {sum(len(c.tools) for c in checks)} tools"
    )
    return 0 if all(c.ok for c in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
