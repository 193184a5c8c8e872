"""A snippet of Python run in a fresh interpreter in the checkout: for what only a new process
shows (which modules a command imports, its start-time environment, a call with nothing loaded)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_python(
    code: str, *args: str, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """`code` run by `python -c` with `args` as its argv, in the checkout's folder; its output
    captured as text. `env` replaces the environment (None: this one). Raises TimeoutExpired."""
    command = [sys.executable, "-c", code, *args]
    return subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
