"""Sandbox dirs on disk: named after the process that owns them, so a later run can remove
what a killed one left behind.

A sandbox is `<root>/mcp-sbx-<pid>-<start>-<random>/` (the server's working dir) with the
siblings `<dir>.etc/` (its passwd and group) and `<dir>.stderr.log`; `<pid>-<start>` is the
owning process id and its start time, so a reused pid is not mistaken for the owner.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path

import psutil

logger = logging.getLogger(__name__)

SANDBOX_PREFIX = "mcp-sbx-"
OWNER_NAME = re.compile(rf"^{SANDBOX_PREFIX}(\d+)-(\d+)-")


def process_start(pid: int) -> int:
    """When a process started, in whole seconds since the epoch; raises psutil.Error."""
    return int(psutil.Process(pid).create_time())


def make_sandbox_dir(sandbox_root: Path | None) -> Path:
    """A fresh private dir (mode 0700) under the root (default: the system temp dir)."""
    if sandbox_root is not None:
        Path(sandbox_root).mkdir(parents=True, exist_ok=True)
    prefix = f"{SANDBOX_PREFIX}{os.getpid()}-{process_start(os.getpid())}-"
    return Path(tempfile.mkdtemp(prefix=prefix, dir=sandbox_root)).resolve()


def remove_sandbox(sandbox_dir: str | Path) -> None:
    """Remove a sandbox dir and its `.etc` sibling (the stderr log has its own owner)."""
    shutil.rmtree(sandbox_dir, ignore_errors=True)
    shutil.rmtree(f"{sandbox_dir}.etc", ignore_errors=True)


def owner_is_gone(name: str) -> bool:
    """True when the entry names an owner and that process no longer runs (a process with
    the same pid but another start time is someone else). Unnamed: never ours to judge."""
    match = OWNER_NAME.match(name)
    if match is None:
        return False
    pid, started = int(match[1]), int(match[2])
    try:
        return process_start(pid) != started
    except psutil.NoSuchProcess:
        return True
    except psutil.Error:
        return False  # cannot tell (access denied): leave it


def remove_stale_sandboxes(sandbox_root: Path | None) -> list[Path]:
    """Remove this user's sandbox dirs (and siblings) under the root whose owning process
    is gone; returns what was removed. Others' entries and live runs' entries stay."""
    root = Path(sandbox_root) if sandbox_root is not None else Path(tempfile.gettempdir())
    removed = []
    with contextlib.suppress(OSError):
        for entry in root.glob(f"{SANDBOX_PREFIX}*"):
            with contextlib.suppress(OSError):
                if entry.lstat().st_uid != os.geteuid() or not owner_is_gone(entry.name):
                    continue
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink()
                removed.append(entry)
    if removed:
        logger.info("removed %d sandbox entries left by runs that ended", len(removed))
    return removed
