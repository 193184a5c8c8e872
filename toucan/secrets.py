"""Keep provider keys and other secrets away from the processes toucan starts.

A child can read its parent's environment at `/proc/<ppid>/environ`, and that file shows the
environment the parent was *started* with: deleting a key from `os.environ` changes nothing
there. So toucan, at start, blanks secret-looking variables in that start-time copy (they stay
in `os.environ`, the copy toucan itself reads its keys from: `DeploymentConfig.api_key`), and
what it starts gets an environment without them: MCP servers an allow-list
(`mcp_env.sandbox.build_environment`), the embedded model server, Prefect's API server and the
installers (uv, npm: third-party build and install scripts run there) this process's
environment minus secrets. Only what calls a provider holds a key.
"""

from __future__ import annotations

import ctypes
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path

logger = logging.getLogger(__name__)

SECRET_ENV_NAME = re.compile(r"(?i)(key|token|secret|password|passwd|credential)")
# what package installers read their registry credentials from (uv, pip, npm)
REGISTRY_PREFIXES = ("UV_", "PIP_", "NPM_", "npm_config_")
# /proc/<pid>/stat fields 50 and 51 (1-based, Linux >= 3.5): where the start-time
# environment lies in the process's memory (proc(5))
ENV_START_FIELD, ENV_END_FIELD = 50, 51


def is_secret_name(name: str) -> bool:
    """A variable whose name says it holds a key, token, secret, password or credential."""
    return bool(SECRET_ENV_NAME.search(name))


def without_secrets(
    environ: Mapping[str, str], keep_prefixes: tuple[str, ...] = ()
) -> dict[str, str]:
    """A copy of `environ` for a child that needs no secret, except the variables named
    with one of `keep_prefixes` (an installer keeps REGISTRY_PREFIXES: a private index's
    credentials; its packages' build and install scripts get no provider key)."""
    return {
        name: value
        for name, value in environ.items()
        if not is_secret_name(name) or name.startswith(keep_prefixes)
    }


def blank_start_environment() -> list[str]:
    """Zero every secret-looking `NAME=value` of this process's start-time environment, so
    `/proc/<our pid>/environ` no longer shows it; `os.environ` and getenv() keep the values
    (re-set first, so libc points at its own copy before the original is wiped). Linux only;
    elsewhere (or if /proc cannot be read) nothing changes. Returns the names blanked."""
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        # fields[0] is field 3 (state): the command name before it may hold spaces
        start, end = int(fields[ENV_START_FIELD - 3]), int(fields[ENV_END_FIELD - 3])
        block = ctypes.string_at(start, end - start)
    except (OSError, ValueError, IndexError):
        return []
    blanked, offset = [], 0
    for entry in block.split(b"\0"):
        name = entry.split(b"=", 1)[0].decode(errors="replace")
        if b"=" in entry and is_secret_name(name):
            if name in os.environ:
                os.environ[name] = os.environ[name]  # putenv: libc now holds its own copy
            ctypes.memset(start + offset, 0, len(entry))
            blanked.append(name)
        offset += len(entry) + 1
    if blanked:
        logger.debug("blanked %d secret variables in the start-time environment", len(blanked))
    return blanked
