"""A local Prefect server (SQLite) and a process worker for the toucan pool, supervised in the
foreground: `toucan server` starts both, and stops both cleanly on Ctrl-C or SIGTERM.

Each child runs in its own session so a terminal's Ctrl-C reaches only this supervisor, which
then stops them in order: the worker first (it lets a running flow end or marks it crashed),
then the server.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from toucan.secrets import without_secrets

SERVER_START_TIMEOUT_S = 180.0  # first start runs the SQLite migrations; slow on a busy host
STOP_GRACE_S = 15.0  # time a child gets after SIGTERM before SIGKILL


@dataclass
class LocalPrefect:
    host: str = "127.0.0.1"
    port: int = 4200
    pool: str = "toucan"
    home: Path | None = None  # PREFECT_HOME: where the SQLite database lives
    ui: bool = True
    poll_seconds: float = 5.0
    workdir: Path | None = None  # where the worker runs flows (relative store paths resolve here)

    @property
    def api_url(self) -> str:
        return f"http://{self.host}:{self.port}/api"

    def child_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "PREFECT_API_URL": self.api_url,
                "PREFECT_UI_ENABLED": "true" if self.ui else "false",
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                "PREFECT_LOGGING_LEVEL": env.get("TOUCAN_PREFECT_LOG_LEVEL", "INFO"),
                "PREFECT_WORKER_QUERY_SECONDS": str(self.poll_seconds),
                "PREFECT_WORKER_PREFETCH_SECONDS": "5",
            }
        )
        if self.home:
            env["PREFECT_HOME"] = str(self.home)
        return env


def prefect_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "prefect", *args]


def start_child(cmd: list[str], env: dict[str, str], cwd: Path | None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(cmd, env=env, cwd=cwd, start_new_session=True)


def stop_child(proc: subprocess.Popen[bytes] | None, grace_s: float = STOP_GRACE_S) -> int | None:
    """SIGTERM the child's process group (both Prefect's server and worker shut down
    gracefully on it), wait, then SIGKILL what is left."""
    if proc is None:
        return None
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # grandchildren that outlived their parent
    return proc.returncode


def wait_healthy(api_url: str, timeout_s: float, alive: Callable[[], bool]) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not alive():
            raise RuntimeError("the Prefect server exited while starting; see its log above")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{api_url}/health", timeout=2.0).status_code == 200:
                return
        time.sleep(0.5)
    raise TimeoutError(f"the Prefect server at {api_url} did not answer in {timeout_s:.0f} s")


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    def raise_interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    # SIGINT too: a parent that ignores it (nohup, a non-interactive shell's `&`) would
    # otherwise leave Ctrl-C without effect.
    previous = {sig: signal.signal(sig, raise_interrupt) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def serve(
    config: LocalPrefect,
    on_ready: Callable[[LocalPrefect], None],
    say: Callable[[str], None],
) -> int:
    """Run server + worker until Ctrl-C/SIGTERM or until one of them dies; returns exit code."""
    env = config.child_env()
    server = worker = None
    code = 0
    with sigterm_as_interrupt():
        try:
            server = start_child(
                prefect_command(
                    "server", "start", "--host", config.host, "--port", str(config.port)
                ),
                without_secrets(env),  # only the worker runs flows that call providers
                config.workdir,
            )
            wait_healthy(config.api_url, SERVER_START_TIMEOUT_S, lambda: server.poll() is None)
            say(f"Prefect server up: {config.api_url} (UI http://{config.host}:{config.port})")
            on_ready(config)
            worker = start_child(
                prefect_command("worker", "start", "--pool", config.pool, "--type", "process"),
                env,
                config.workdir,
            )
            say(f"worker polling pool '{config.pool}'; Ctrl-C stops both")
            while server.poll() is None and worker.poll() is None:
                time.sleep(0.5)
            say("a child exited on its own; stopping the other")
            code = 1
        except KeyboardInterrupt:
            say("stopping the worker, then the server")
        finally:
            stop_child(worker)
            stop_child(server)
    return code
