"""How a server process is cut off from toucan: bubblewrap, or a clean-environment helper.

`bwrap` (the default wherever bubblewrap runs, root or not: it uses user namespaces): the
server gets its own user, PID, IPC, UTS and cgroup namespaces, a /proc that shows only its own
processes (so neither toucan's process nor its environment can be read), no capabilities,
a private /tmp and the allow-list view of `mcp_env.sandbox_view`; its network namespace is
the host's only when the spec keeps network.

`helper` (where bubblewrap cannot run): the server runs as the child of `sh`, whose exec-time
environment is the server's own allow-listed one, so `/proc/<ppid>/environ` holds no secret.
The server still sees the host's files and other processes; this is logged once and recorded
on every launch (`Launch.sandbox_mode`).
"""

from __future__ import annotations

import functools
import grp
import logging
import os
import pwd
import shutil
import subprocess
from pathlib import Path
from typing import Literal

from mcp_env.sandbox_view import View, base_view, program_paths
from mcp_env.specs import SandboxSpec
from toucan.errors import ServerStartError

logger = logging.getLogger(__name__)

SandboxMode = Literal["bwrap", "helper"]
SANDBOX_HOSTNAME = "mcp-sandbox"  # the host's name would end up in tool results otherwise
PROBE_TIMEOUT_S = 10.0
# `sh -c` runs the server as its child (a following command keeps sh from exec'ing it)
HELPER_SCRIPT = '"$@"; exit $?'
NOBODY_ID = 65534


@functools.cache
def detect_isolation() -> SandboxMode:
    """'bwrap' when bubblewrap can build the sandbox here, else 'helper' (warned once)."""
    problem = bwrap_problem()
    if problem is None:
        return "bwrap"
    logger.warning(
        "bubblewrap cannot run here (%s): MCP servers start through a clean-environment "
        "helper instead, which hides toucan's environment from them but not the host's "
        "files or processes (weaker than the bubblewrap sandbox)",
        problem,
    )
    return "helper"


def bwrap_problem() -> str | None:
    """Why the bubblewrap sandbox cannot start here (None: it can), from a real probe."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return "bwrap is not installed"
    argv = [bwrap, *namespace_args(network=False), *base_view(network=False).bwrap_args()]
    try:
        probe = subprocess.run(
            [*argv, "--", "true"], capture_output=True, timeout=PROBE_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"probe failed: {error}"
    if probe.returncode != 0:
        return probe.stderr.decode(errors="replace").strip()[:300] or f"exit {probe.returncode}"
    return None


@functools.cache
def network_cut_problem() -> str | None:
    """Why `unshare -n` (the helper's way to take the network away) fails here, or None."""
    unshare = shutil.which("unshare")
    if unshare is None:
        return "unshare is not installed"
    try:
        probe = subprocess.run(
            [unshare, "-n", "true"], capture_output=True, timeout=PROBE_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"probe failed: {error}"
    return None if probe.returncode == 0 else probe.stderr.decode(errors="replace").strip()


def namespace_args(network: bool) -> list[str]:
    """bwrap options before the mounts: namespaces, no capabilities (root keeps them in
    bwrap otherwise), fresh /proc and /dev, private /tmp, death with the parent."""
    args = ["--unshare-all", "--die-with-parent", "--cap-drop", "ALL"]
    if network:
        args.append("--share-net")
    args += ["--hostname", SANDBOX_HOSTNAME, "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]
    return args


def confine(
    argv: list[str],
    sandbox: SandboxSpec,
    *,
    mode: SandboxMode,
    box: Path,
    cwd: str,
    env: dict[str, str],
    seed_dir: Path | None,
    named_paths: tuple[list[str], list[str]],
) -> list[str]:
    """The argv that starts `argv` inside its sandbox. `named_paths` are the spec's
    (read-only, writable) host paths with placeholders filled. Raises ServerStartError:
    `sandbox_path_missing`, or `sandbox_unavailable` when the network cannot be cut."""
    read_only, writable = named_paths
    missing = [path for path in read_only + writable if not os.path.exists(path)]
    if missing:
        raise ServerStartError(f"sandbox paths not found: {missing}", reason="sandbox_path_missing")
    if mode == "helper":
        return wrap_helper(argv, sandbox.has_network)
    view = base_view(sandbox.has_network)
    for path in program_paths(argv, env["PATH"]):
        view.add(path)
    if not sandbox.isolate:
        for path in named_files(argv, seed_dir):
            view.add(path)
    for path in read_only:
        view.add(path)
    for path in [*writable, box]:
        view.add(path, writable=True)
    if not view.covers(os.path.realpath(cwd)):
        view.add(cwd)
    view.files.update(write_identity(Path(f"{box}.etc"), env["HOME"]))
    return wrap_bwrap(argv, view, sandbox.has_network, cwd)


def named_files(argv: list[str], seed_dir: Path | None) -> list[str]:
    """What a server that is not isolated may also read: the fleet's seed dir and the
    existing files its command line names (a config file the catalog points it at); never
    a directory, which the spec must name in `read_only_paths`."""
    files = [arg for arg in argv[1:] if os.path.isabs(arg) and os.path.isfile(arg)]
    return [*files, *([str(seed_dir)] if seed_dir is not None and seed_dir.is_dir() else [])]


def wrap_bwrap(argv: list[str], view: View, network: bool, cwd: str) -> list[str]:
    bwrap = shutil.which("bwrap") or "bwrap"
    return [bwrap, *namespace_args(network), *view.bwrap_args(), "--chdir", cwd, "--", *argv]


def wrap_helper(argv: list[str], network: bool) -> list[str]:
    """`sh` as the server's parent (its own pid-death signal kept by setpriv), under
    `unshare -n` when the spec has no network."""
    inner = list(argv)
    if setpriv := shutil.which("setpriv"):
        inner = [setpriv, "--pdeathsig", "KILL", "--", *inner]
    if not network:
        problem = network_cut_problem()
        if problem is not None:
            raise ServerStartError(
                f"the spec has no network but neither bwrap nor unshare works here: {problem}",
                reason="sandbox_unavailable",
            )
        inner = [shutil.which("unshare") or "unshare", "-n", "--", *inner]
    return [shutil.which("sh") or "/bin/sh", "-c", HELPER_SCRIPT, "toucan-mcp-helper", *inner]


def write_identity(etc_dir: Path, home: str) -> dict[str, str]:
    """A passwd and group naming only the server's own user and nobody (programs such as
    git and Node's os.userInfo look the user up); {view path: host file}."""
    uid, gid = os.getuid(), os.getgid()
    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:
        user = "toucan"
    try:
        group = grp.getgrgid(gid).gr_name
    except KeyError:
        group = user
    users = [f"{user}:x:{uid}:{gid}:{user}:{home}:/bin/sh"]
    groups = [f"{group}:x:{gid}:"]
    if uid != NOBODY_ID:
        users.append(f"nobody:x:{NOBODY_ID}:{NOBODY_ID}:nobody:/nonexistent:/usr/sbin/nologin")
    if gid != NOBODY_ID:
        groups.append(f"nogroup:x:{NOBODY_ID}:")
    etc_dir.mkdir(exist_ok=True)
    (etc_dir / "passwd").write_text("\n".join(users) + "\n")
    (etc_dir / "group").write_text("\n".join(groups) + "\n")
    return {"/etc/passwd": str(etc_dir / "passwd"), "/etc/group": str(etc_dir / "group")}
