"""Per-server sandboxes: a private working dir, an allow-listed environment, confinement.

A `Launch` is everything needed to start one server process: the final argv (wrapped in
bubblewrap, or in the weaker helper where bubblewrap cannot run: mcp_env/confine.py), its
environment, its working dir and the port it may serve on.
`start_process` / `stop_process_tree` start it in its own session and take the whole tree
down again (close stdin, wait, SIGTERM the group, SIGKILL survivors).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import TypeVar

import anyio
import psutil
from anyio.abc import Process
from pydantic import BaseModel

from mcp_env.confine import SandboxMode, confine, detect_isolation
from mcp_env.sandbox_dirs import make_sandbox_dir, remove_sandbox, remove_stale_sandboxes
from mcp_env.specs import StdioSpec
from toucan.errors import ServerStartError

logger = logging.getLogger(__name__)

# a server gets this long to exit by itself once its stdin closes (MCP shutdown sequence)
T = TypeVar("T")

STDIN_CLOSE_GRACE_S = 2.0
# after SIGTERM to the group, survivors get this long before SIGKILL
SIGTERM_GRACE_S = 2.0
PASSED_THROUGH_ENV = ("PATH", "LANG", "LC_ALL", "USER", "LOGNAME")
QUIET_ENV = {
    "FASTMCP_CHECK_FOR_UPDATES": "off",  # fastmcp servers phone pypi.org at start otherwise
    "FASTMCP_SHOW_SERVER_BANNER": "false",
    "NO_COLOR": "1",
    "TERM": "dumb",
    "PYTHONUNBUFFERED": "1",
}


class Launch(BaseModel):
    """A prepared server start: nothing runs yet, but the sandbox dir exists."""

    argv: list[str]
    env: dict[str, str]
    cwd: str
    sandbox_dir: str
    port: int
    sandbox_mode: SandboxMode  # helper = weaker: host files and processes stay visible


def find_free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def substitute_vars(value: T, values: dict[str, str]) -> T:
    """Replace `{sandbox}`, `{port}`, `{seed}`, `{fleet}` in a string or in every string of a
    nested dict/list; other braces (JSON) and names not given stay as they are."""
    if isinstance(value, str):
        for key, replacement in values.items():
            value = value.replace("{" + key + "}", replacement)  # type: ignore[assignment]
        return value
    if isinstance(value, dict):
        return {key: substitute_vars(item, values) for key, item in value.items()}  # type: ignore[return-value]
    if isinstance(value, list):
        return [substitute_vars(item, values) for item in value]  # type: ignore[return-value]
    return value


def make_placeholders(
    sandbox_dir: Path, port: int, seed_dir: Path | None, fleet_dir: Path | None
) -> dict[str, str]:
    return {
        "sandbox": str(sandbox_dir),
        "port": str(port),
        "seed": str(seed_dir or ""),
        "fleet": str(fleet_dir or ""),
    }


def build_environment(spec: StdioSpec, sandbox_dir: Path, values: dict[str, str]) -> dict[str, str]:
    """Only the allow-list: PATH/LANG/USER, home and temp dirs inside the sandbox, the spec's
    own env and config values. Nothing else of the parent (no API keys) reaches the child."""
    env = {key: os.environ[key] for key in PASSED_THROUGH_ENV if key in os.environ}
    env.setdefault("PATH", os.defpath)
    env.setdefault("LANG", "C.UTF-8")
    command_dir = os.path.dirname(spec.command)
    if os.path.isabs(spec.command) and command_dir:
        env["PATH"] = f"{command_dir}{os.pathsep}{env['PATH']}"
    for key, sub in (
        ("HOME", "home"),
        ("XDG_CONFIG_HOME", "home/.config"),
        ("XDG_CACHE_HOME", "home/.cache"),
        ("XDG_DATA_HOME", "home/.local/share"),
        ("TMPDIR", "tmp"),
        ("npm_config_cache", "home/.npm"),
    ):
        path = sandbox_dir / sub
        path.mkdir(parents=True, exist_ok=True)
        env[key] = str(path)
    env.update(QUIET_ENV)
    env.update({key: substitute_vars(value, values) for key, value in spec.env.items()})
    for field in spec.config:
        value = spec.config_values.get(field.name)
        if field.env and value:
            env[field.env] = value
    return env


def copy_seed(seed_names: list[str], seed_dir: Path | None, sandbox_dir: Path) -> None:
    for name in seed_names:
        if seed_dir is None:
            raise ServerStartError(
                f"seed {name!r} asked for but no seed dir", reason="missing_seed"
            )
        source = seed_dir / name
        target = sandbox_dir / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, dirs_exist_ok=True)
        elif source.is_file():
            shutil.copy2(source, target)
        else:
            raise ServerStartError(f"seed {name!r} not found in {seed_dir}", reason="missing_seed")


def prepare_launch(
    spec: StdioSpec,
    *,
    sandbox_root: Path | None,
    seed_dir: Path | None,
    fleet_dir: Path | None,
    port: int | None = None,
    isolation: SandboxMode | None = None,
) -> Launch:
    """Create the sandbox dir, copy seeds, fill placeholders, build env and the confined argv.

    `isolation` is 'bwrap' or 'helper' (`detect_isolation()`'s answer; pass it to avoid
    probing per server). Raises ServerStartError (`command_not_found`, `missing_seed`,
    `cwd_not_found`, `sandbox_path_missing`, `sandbox_unavailable`); on failure the sandbox
    dir is removed again before the error propagates.
    """
    sandbox_dir = make_sandbox_dir(sandbox_root)
    try:
        port = port or find_free_port()
        values = make_placeholders(sandbox_dir, port, seed_dir, fleet_dir)
        copy_seed(spec.sandbox.seed, seed_dir, sandbox_dir)
        env = build_environment(spec, sandbox_dir, values)
        argv = [substitute_vars(part, values) for part in [spec.command, *spec.args]]
        if shutil.which(argv[0], path=env["PATH"]) is None:
            raise ServerStartError(f"{argv[0]} not found on PATH", reason="command_not_found")
        cwd = substitute_vars(spec.cwd, values) if spec.cwd else str(sandbox_dir)
        if not os.path.isdir(cwd):
            raise ServerStartError(f"working dir {cwd} does not exist", reason="cwd_not_found")
        mode = isolation or detect_isolation()
        named = (
            substitute_vars(spec.sandbox.read_only_paths, values),
            substitute_vars(spec.sandbox.writable_paths, values),
        )
        argv = confine(
            argv,
            spec.sandbox,
            mode=mode,
            box=sandbox_dir,
            cwd=cwd,
            env=env,
            seed_dir=seed_dir,
            named_paths=named,
        )
        return Launch(
            argv=argv,
            env=env,
            cwd=cwd,
            sandbox_dir=str(sandbox_dir),
            port=port,
            sandbox_mode=mode,
        )
    except BaseException:
        remove_sandbox(sandbox_dir)
        raise


def prepare_sandboxes(sandbox_root: Path | None) -> SandboxMode:
    """Once per pool, before its first start: remove what killed runs left under the
    sandbox root (fault: their dirs stayed on disk) and pick the sandbox mode."""
    remove_stale_sandboxes(sandbox_root)
    return detect_isolation()


def with_parent_death_signal(argv: list[str]) -> list[str]:
    """Have the kernel kill the server if we die hard (SIGKILL), when setpriv is present."""
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "KILL", "--", *argv] if setpriv else argv


async def start_process(launch: Launch, *, stdout: int | None, stderr_path: Path) -> Process:
    """Start the launch in a new session (its own process group), stderr to a log file."""
    argv = with_parent_death_signal(launch.argv)
    try:
        with open(stderr_path, "ab") as stderr_file:
            return await anyio.open_process(
                argv,
                stdin=subprocess.PIPE,
                stdout=stdout,
                stderr=stderr_file,
                cwd=launch.cwd,
                env=launch.env,
                start_new_session=True,
            )
    except FileNotFoundError as error:
        raise ServerStartError(str(error), reason="command_not_found") from error
    except PermissionError as error:
        raise ServerStartError(str(error), reason="command_not_executable") from error


def list_session_members(session_id: int) -> list[psutil.Process]:
    """Every live process in the given session (our children never leave it unless they setsid)."""
    members = []
    for candidate in psutil.process_iter():
        with contextlib.suppress(psutil.Error, ProcessLookupError, PermissionError):
            if os.getsid(candidate.pid) == session_id and candidate.status() != "zombie":
                members.append(candidate)
    return members


async def stop_process_tree(process: Process) -> None:
    """Close stdin, wait, SIGTERM the group, SIGKILL survivors; shielded from cancellation."""
    with anyio.CancelScope(shield=True):
        if process.stdin is not None:
            with contextlib.suppress(Exception):
                await process.stdin.aclose()
        if not await _wait_exit(process, STDIN_CLOSE_GRACE_S):
            _signal_group(process.pid, signal.SIGTERM)
            if not await _wait_exit(process, SIGTERM_GRACE_S):
                _signal_group(process.pid, signal.SIGKILL)
                await _wait_exit(process, SIGTERM_GRACE_S)
        await _kill_session_survivors(process.pid)


async def _kill_session_survivors(session_id: int) -> None:
    survivors = await anyio.to_thread.run_sync(list_session_members, session_id)
    for survivor in survivors:
        with contextlib.suppress(psutil.Error):
            survivor.kill()
    if survivors:
        await anyio.to_thread.run_sync(lambda: psutil.wait_procs(survivors, timeout=2.0))


def _signal_group(process_group: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process_group, signum)


async def _wait_exit(process: Process, timeout: float) -> bool:
    """Poll returncode: process.wait() also waits for pipe EOF, which a grandchild can hold."""
    deadline = time.monotonic() + timeout
    while process.returncode is None:
        if time.monotonic() >= deadline:
            return False
        await anyio.sleep(0.01)
    return True
