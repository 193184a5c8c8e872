"""Prefect's ephemeral API server, started so that it never outlives toucan.

Without PREFECT_API_URL, Prefect runs its API in a uvicorn child process
(`SubprocessASGIServer`, ~250 MB) and stops it at exit; a `kill -9` of toucan used to leave
it running, and they piled up. `ToucanApiServer` starts the same process with a parent-death
signal (Linux `prctl(PR_SET_PDEATHSIG)`: the kernel kills the child when the thread that
started it ends) and records it in `<PREFECT_HOME>/toucan-api-servers/<pid>.json` with its
own and its owner's start time. The next start removes recorded servers whose owner is gone
(for systems without the signal, or a server started from a thread other than the main
one), and only a process with the recorded pid *and* start time: a reused pid is someone
else's.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import prefect
import psutil
from prefect.server.api.server import SubprocessASGIServer
from prefect.settings import (
    PREFECT_API_URL,
    PREFECT_HOME,
    PREFECT_SERVER_EPHEMERAL_ENABLED,
    get_current_settings,
)

from mcp_env.sandbox_dirs import process_start
from toucan.secrets import without_secrets

logger = logging.getLogger(__name__)

RECORDS_DIR = "toucan-api-servers"
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
DEATH_SIGNAL = signal.SIGKILL  # its owner is gone: nothing is waiting for a clean shutdown
REAP_WAIT_S = 5.0


def start_ephemeral_api() -> None:
    """Start Prefect's ephemeral API server now (it would start with the first flow), as a
    `ToucanApiServer`, after removing servers that killed runs left. No-op when
    PREFECT_API_URL names a server or ephemeral mode is off."""
    if PREFECT_API_URL.value() or not PREFECT_SERVER_EPHEMERAL_ENABLED.value():
        return
    reap_stale_servers(records_dir())
    ToucanApiServer().start()


class ToucanApiServer(SubprocessASGIServer):
    """Prefect's ephemeral API server (the instance Prefect's own client code finds: it is
    kept in the same per-port registry), started to die with this process, and recorded."""

    def _run_uvicorn_command(self) -> subprocess.Popen[Any]:
        # Prefect 3.9's command (SubprocessASGIServer._run_uvicorn_command), plus the signal,
        # and without secrets in the copy of our environment it gets: it needs none
        on_main_thread = threading.current_thread() is threading.main_thread()
        process = subprocess.Popen(
            args=uvicorn_command(self.port),
            env={
                **without_secrets(os.environ),
                "PREFECT_UI_ENABLED": "0",
                "PREFECT__SERVER_EPHEMERAL": "1",
                "PREFECT__SERVER_FINAL": "1",
                **get_current_settings().to_environment_variables(exclude_unset=True),
            },
            # the signal fires when the starting *thread* ends: only the main thread's
            # lifetime is the process's
            preexec_fn=die_with_parent(os.getpid()) if on_main_thread else None,
        )
        record_server(records_dir(), process.pid)
        return process

    def stop(self) -> None:
        pid = self.server_process.pid if self.server_process else None
        super().stop()
        if pid is not None:
            (records_dir() / f"{pid}.json").unlink(missing_ok=True)


def uvicorn_command(port: int | None) -> list[str]:
    app_dir = str(prefect.__module_path__.parent)
    return [
        sys.executable, "-m", "uvicorn", "--app-dir", app_dir,
        "--factory", "prefect.server.api.server:create_app",
        "--host", "127.0.0.1", "--port", str(port), "--log-level", "error", "--lifespan", "on",
    ]  # fmt: skip


def die_with_parent(parent_pid: int) -> Callable[[], None] | None:
    """A Popen `preexec_fn` that arms the parent-death signal in the child (Linux; None
    elsewhere). A parent that died before it was armed is caught by the pid check."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up before the fork

    def arm() -> None:
        prctl(PR_SET_PDEATHSIG, DEATH_SIGNAL)
        if os.getppid() != parent_pid:
            os._exit(1)

    return arm


def records_dir() -> Path:
    return Path(PREFECT_HOME.value()) / RECORDS_DIR


def record_server(directory: Path, pid: int) -> None:
    """Note a started server: its pid and start time, and this process's (the owner's)."""
    directory.mkdir(parents=True, exist_ok=True)
    owner = os.getpid()
    record = {"pid": pid, "started": process_start(pid)}
    record |= {"owner_pid": owner, "owner_started": process_start(owner)}
    (directory / f"{pid}.json").write_text(json.dumps(record))


def is_running(pid: int, started: int) -> bool:
    """The process with this pid runs and is the one that started at `started`."""
    try:
        return process_start(pid) == started
    except psutil.NoSuchProcess:
        return False


def reap_stale_servers(directory: Path) -> list[int]:
    """Kill recorded servers whose owner is gone and forget servers that are gone; returns
    the pids killed. A record that cannot be read is dropped; a live owner's server stays."""
    killed = []
    for path in directory.glob("*.json"):
        try:
            record = json.loads(path.read_text())
            server = (int(record["pid"]), int(record["started"]))
            owner = (int(record["owner_pid"]), int(record["owner_started"]))
        except (OSError, ValueError, KeyError, TypeError):
            path.unlink(missing_ok=True)
            continue
        with contextlib.suppress(psutil.Error):  # access denied: someone else's; leave it
            if is_running(*server) and is_running(*owner):
                continue
            if is_running(*server):
                process = psutil.Process(server[0])
                process.kill()
                process.wait(REAP_WAIT_S)
                killed.append(server[0])
            path.unlink(missing_ok=True)
    if killed:
        logger.info("stopped %d Prefect API servers left by runs that ended", len(killed))
    return killed
