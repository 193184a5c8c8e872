"""Fixtures for the mcp_env tests: tiny real MCP servers, and a check that none survive."""

from __future__ import annotations

import json
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from mcp_env.specs import SandboxSpec, StdioSpec

TINY_SERVER = Path(__file__).resolve().parents[1] / "servers" / "tiny_server.py"
# servers reproducing real-world faults: rawserver.py driven by one JSON file each
QUIRKS = Path(__file__).resolve().parents[1] / "servers" / "quirks"
HTTP_OR_SSE_SERVER = QUIRKS / "http_or_sse_server.py"
PYTHON = sys.executable
# the machine is shared and slow to import the mcp package: allow a generous start
CONNECT_TIMEOUT_S = 60.0
LEFTOVER_WAIT_S = 10.0
# on every tiny server's command line, so parallel test runs do not see each other's servers
RUN_TAG = f"run-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def tiny_spec(
    name: str = "tiny", mode: str = "good", log: Path | None = None, **fields
) -> StdioSpec:
    args = [str(TINY_SERVER), "--tag", RUN_TAG, "--mode", mode]
    if log is not None:
        args += ["--log", str(log)]
        fields["sandbox"] = with_writable_log(log, fields.get("sandbox"))
    return StdioSpec(name=name, command=PYTHON, args=args, **fields)


def quirk_spec(config: str, log: Path | None = None, **fields: Any) -> StdioSpec:
    """A rawserver.py spec for tests/servers/quirks/<config>[.json]; `log` records what it
    received (made writable from inside the server's sandbox)."""
    env = {"RAW_LOG": str(log)} if log is not None else {}
    if log is not None:
        fields["sandbox"] = with_writable_log(log, fields.get("sandbox"))
    file_name = config if config.endswith(".json") else f"{config}.json"
    args = [str(QUIRKS / "rawserver.py"), str(QUIRKS / file_name)]
    name = fields.pop("name", f"quirk-{Path(file_name).stem}".replace("_", "-"))
    return StdioSpec(name=name, command=PYTHON, args=args, env=env, **fields)


def served_spec(speaks: str, path: str, declared: str | None) -> dict[str, object]:
    """A catalog entry for http_or_sse_server.py speaking `speaks` at `path`, declared as
    `declared` (None: a bare `url`, as every Smithery record is); toucan launches it."""
    args = [str(HTTP_OR_SSE_SERVER), speaks, "{port}"]
    entry: dict[str, object] = {
        "name": f"{speaks}-as-{declared}",
        "url": "http://127.0.0.1:{port}" + path,
        "launch": {"name": "launcher", "command": PYTHON, "args": args},
    }
    if declared is not None:
        entry["transport"] = declared
    return entry


def read_raw_log(log: Path) -> list[dict]:
    """What a rawserver received, one JSON object a line (see rawserver.py's `log`)."""
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


def with_writable_log(log: Path, sandbox: SandboxSpec | None = None) -> SandboxSpec:
    """The spec's sandbox plus the test's call log, which the server must be able to append
    to from inside its sandbox (created here: a sandbox path must exist)."""
    log.touch()
    sandbox = sandbox or SandboxSpec()
    return sandbox.model_copy(update={"writable_paths": [*sandbox.writable_paths, str(log)]})


def list_tiny_processes() -> list[psutil.Process]:
    """This run's tiny servers (the Python processes, not the sandbox wrappers around them)."""
    found = []
    for process in psutil.process_iter(["cmdline", "status"]):
        argv = process.info["cmdline"] or [""]
        cmdline = " ".join(argv)
        server = Path(argv[0]).name.startswith("python")
        mine = server and "tiny_server.py" in cmdline and RUN_TAG in cmdline
        if mine and process.info["status"] != psutil.STATUS_ZOMBIE:
            found.append(process)
    return found


def wait_until(condition, timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return condition()


def read_log(log: Path) -> list[tuple[int, str]]:
    if not log.exists():
        return []
    rows = []
    for line in log.read_text().splitlines():
        pid, event = line.split(" ", 1)
        rows.append((int(pid), event))
    return rows


@pytest.fixture(autouse=True)
def no_leftover_servers() -> Iterator[None]:
    """After every test, no tiny server process may survive."""
    yield
    survivors = list_tiny_processes()
    if survivors and not wait_until(lambda: not list_tiny_processes(), LEFTOVER_WAIT_S):
        leftover = list_tiny_processes()
        for process in leftover:
            process.kill()
        pytest.fail(f"leftover server processes: {[p.info['cmdline'] for p in leftover]}")
