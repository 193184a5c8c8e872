"""Start fleet servers with the raw mcp client and measure them: tools, start time, probe call.

`python -m mcp_env.fleet.check [--fleet-dir .fleet] [--only NAME ...] [--readme]` prints one line
per server and, with --readme, rewrites the table in mcp_env/fleet/README.md. This is the
fleet's own health check (no bubblewrap, no pool): the session layer launches servers for real.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client
from pydantic import BaseModel, Field

from mcp_env.fleet.catalog import load_fleet_catalog
from mcp_env.sandbox import substitute_vars
from mcp_env.specs import HttpSpec, StdioSpec, parse_server_spec

START_TIMEOUT_S = 60.0  # a cold Python server can take ~15 s before its .pyc files exist
CALL_TIMEOUT_S = 30.0
HTTP_READY_TIMEOUT_S = 30.0  # a gateway/HTTP server must bind its port within this


class ServerCheck(BaseModel):
    name: str
    transport: str = "stdio"
    offline: bool = False  # ran with no network namespace interfaces
    ok: bool = False
    tools: list[str] = Field(default_factory=list)
    start_ms: int = 0  # spawn -> initialized
    probe_ok: bool = False
    probe_text: str = ""
    error: str = ""


class DropNonJsonStdoutLines(logging.Filter):
    """Some servers print banners on stdout; the SDK logs each such line with a traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Failed to parse JSONRPC message")


def pick_free_port() -> int:
    with socket.socket() as probe_socket:
        probe_socket.bind(("127.0.0.1", 0))
        return probe_socket.getsockname()[1]


def prepare_sandbox(spec: dict[str, Any], seed_dir: Path, sandbox: Path) -> dict[str, Any]:
    """Copy the spec's seed entries into sandbox and fill {sandbox} and {port} in the spec."""
    for folder in ("home", "tmp", ".config", ".cache", ".local/share"):
        (sandbox / folder).mkdir(parents=True, exist_ok=True)
    launch = spec.get("launch") or spec
    for entry in (launch.get("sandbox") or {}).get("seed", []):
        source, target = seed_dir / entry, sandbox / entry
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, symlinks=True)
        else:
            shutil.copyfile(source, target)
    return substitute_vars(spec, {"sandbox": str(sandbox), "port": str(pick_free_port())})


def build_environment(launch: StdioSpec, sandbox: Path) -> dict[str, str]:
    env = {
        "HOME": str(sandbox / "home"),
        "XDG_CONFIG_HOME": str(sandbox / ".config"),
        "XDG_CACHE_HOME": str(sandbox / ".cache"),
        "XDG_DATA_HOME": str(sandbox / ".local/share"),
        "TMPDIR": str(sandbox / "tmp"),
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
    }
    return env | launch.env


async def wait_for_port(url_port: int, process: subprocess.Popen[bytes]) -> None:
    with anyio.fail_after(HTTP_READY_TIMEOUT_S):
        while True:
            if process.poll() is not None:
                raise RuntimeError(
                    f"HTTP server exited with code {process.returncode} before listening"
                )
            try:
                stream = await anyio.connect_tcp("127.0.0.1", url_port)
            except OSError:
                await anyio.sleep(0.05)
                continue
            await stream.aclose()
            return


def find_offline_wrapper() -> list[str]:
    """`unshare --net --` when we may create a network namespace (root), else nothing."""
    unshare = shutil.which("unshare")
    if unshare and os.geteuid() == 0:
        return [unshare, "--net", "--"]
    return []


@asynccontextmanager
async def connect_server(
    spec: StdioSpec | HttpSpec, sandbox: Path, errlog: Any, offline: bool = False
) -> AsyncIterator[Client]:
    """An initialized legacy-mode client for a stdio spec or a locally launched HTTP spec.

    offline=True runs a stdio server in a network namespace with no interfaces up, which
    proves it needs no network (HTTP servers must share loopback with us, so they cannot).
    """
    if isinstance(spec, StdioSpec):
        wrapper = find_offline_wrapper() if offline else []
        command = [*wrapper, spec.command, *spec.args]
        params = StdioServerParameters(
            command=command[0], args=command[1:], env=build_environment(spec, sandbox), cwd=spec.cwd
        )
        transport = stdio_client(params, errlog=errlog)
        async with Client(transport, mode="legacy", read_timeout_seconds=CALL_TIMEOUT_S) as client:
            yield client
        return
    if spec.launch is None:
        raise ValueError(f"{spec.name}: only locally launched HTTP servers are checked")
    process = subprocess.Popen(
        [spec.launch.command, *spec.launch.args],
        env=build_environment(spec.launch, sandbox),
        cwd=spec.launch.cwd,
        stdin=subprocess.DEVNULL,
        stdout=errlog,
        stderr=errlog,
        start_new_session=True,
    )
    try:
        port = int(spec.url.split(":")[2].split("/")[0])
        await wait_for_port(port, process)
        async with Client(spec.url, mode="legacy", read_timeout_seconds=CALL_TIMEOUT_S) as client:
            yield client
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def list_tool_names(client: Client) -> list[str]:
    names, cursor = [], None
    while True:
        page = await client.list_tools(cursor=cursor)
        names += [tool.name for tool in page.tools]
        cursor = page.next_cursor
        if not cursor:
            return names


def summarize_content(result: Any) -> str:
    texts = [getattr(block, "text", "") or f"<{block.type}>" for block in result.content]
    return " ".join(texts).replace("\n", " ")[:160]


async def check_server(
    raw_spec: dict[str, Any], seed_dir: Path, work_dir: Path, offline: bool = True
) -> ServerCheck:
    """Start one server in a fresh sandbox under work_dir, list its tools, run its probe."""
    check = ServerCheck(name=raw_spec["name"])
    sandbox = Path(tempfile.mkdtemp(prefix=f"{check.name}-", dir=work_dir))
    spec = parse_server_spec(prepare_sandbox(raw_spec, seed_dir, sandbox))
    check.transport = spec.transport
    check.offline = offline and isinstance(spec, StdioSpec) and bool(find_offline_wrapper())
    started = time.monotonic()
    try:
        with open(sandbox / "server.log", "w") as errlog:
            with anyio.fail_after(START_TIMEOUT_S + CALL_TIMEOUT_S * 2):
                async with connect_server(spec, sandbox, errlog, offline) as client:
                    check.start_ms = int((time.monotonic() - started) * 1000)
                    check.tools = await list_tool_names(client)
                    check.ok = bool(check.tools)
                    if spec.probe:
                        result = await client.call_tool(
                            spec.probe["tool"], spec.probe.get("arguments", {})
                        )
                        check.probe_text = summarize_content(result)
                        check.probe_ok = (
                            not result.is_error and "error" not in check.probe_text.lower()[:40]
                        )
    except Exception as exc:
        log_tail = (sandbox / "server.log").read_text(errors="replace")[-400:]
        check.error = f"{type(exc).__name__}: {exc} | {log_tail}"
    return check


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
    logging.getLogger("mcp.client.stdio").addFilter(DropNonJsonStdoutLines())
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
