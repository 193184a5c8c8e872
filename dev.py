#!/usr/bin/env python3
"""Set-up and entry points for a fresh clone; needs only python3 (3.11+), pip and node.

    python3 dev.py demo     # install what is missing, then run the offline demo pipeline
    python3 dev.py test     # install what is missing, then run the test suite
    python3 dev.py setup    # only install (project venv, locked deps, MCP fleet, local model)

Every step is idempotent and says what it does; a second run skips what is already there.
Standard library only: this runs before any dependency exists.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
VENV_PY = VENV / "bin" / "python"
UV_VERSION = "0.13.8"
EXTRAS = ["langchain", "dask", "hf"]
DEBIAN_PACKAGES = {"bwrap": "bubblewrap", "git": "git", "chromium": "chromium"}


def say(message: str) -> None:
    print(f"[setup] {message}", flush=True)


def run(argv: list[str], **kwargs: object) -> None:
    subprocess.run(argv, check=True, cwd=ROOT, **kwargs)  # type: ignore[call-overload]


def find_python() -> str:
    """This interpreter if it is 3.11+, else a pyenv 3.11/3.12."""
    if sys.version_info >= (3, 11):  # noqa: UP036 - dev.py runs on whatever python3 is
        return sys.executable
    for candidate in ("python3.11", "python3.12"):
        if found := shutil.which(candidate):
            return found
    sys.exit("toucan needs Python 3.11 or newer")


def ensure_venv() -> None:
    if not VENV_PY.exists():
        say(f"creating {VENV.relative_to(ROOT)}")
        run([find_python(), "-m", "venv", str(VENV)])
    uv = VENV / "bin" / "uv"
    if not uv.exists():
        say(f"installing uv {UV_VERSION} into the venv")
        run([str(VENV_PY), "-m", "pip", "install", "--quiet", f"uv=={UV_VERSION}"])
    started = time.monotonic()
    extras = [arg for extra in EXTRAS for arg in ("--extra", extra)]
    run(
        # --compile-bytecode: the sandbox sets PYTHONDONTWRITEBYTECODE, so without .pyc files
        # every process (tests, servers, workers) compiled LiteLLM and Prefect from source
        [
            str(uv),
            "sync",
            "--frozen",
            "--inexact",
            "--quiet",
            "--compile-bytecode",
            "--python",
            str(VENV_PY),
            *extras,
        ],
        env={**os.environ, "UV_PROJECT_ENVIRONMENT": str(VENV)},
    )
    say(f"locked dependencies in place ({time.monotonic() - started:.1f}s)")


def ensure_debian_packages(commands: list[str]) -> None:
    missing = [DEBIAN_PACKAGES[c] for c in commands if shutil.which(c) is None]
    if not missing:
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        say(f"missing system packages {missing}; install them (some features will be skipped)")
        return
    say(f"installing system packages: {' '.join(missing)}")
    run(["apt-get", "update", "-qq"], stdout=subprocess.DEVNULL)
    run(
        ["apt-get", "install", "-y", "-qq", *missing],
        stdout=subprocess.DEVNULL,
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
    )


def ensure_fleet() -> None:
    say("installing the bundled MCP fleet (first time: a few minutes)")
    run([str(VENV_PY), "-m", "mcp_env.fleet.install"])


def ensure_local_model() -> None:
    say("making sure the embedded local model is installed (first time: ~5 min compile)")
    run([str(VENV_PY), "-m", "toucan.llm.local_build"])


def setup(*, local_model: bool, browser: bool) -> None:
    ensure_venv()
    ensure_debian_packages(["bwrap", "git"] + (["chromium"] if browser else []))
    ensure_fleet()
    if local_model:
        ensure_local_model()


def test_workers(args: list[str]) -> list[str]:
    """Two pytest-xdist workers unless the caller chose (-n / -p no:xdist): most of the suite's
    time is spent waiting on MCP servers, model servers and subprocesses, not on CPU, so two
    workers halve its wall time on a 2-core box. A test file stays on one worker (loadfile), so
    its module fixtures are built once; files are handed out in collection order, where
    tests/conftest.py puts the long ones first (xdist's default order, most tests first, left
    the files of one or two long tests to the end, one worker running them while the other
    idled)."""
    if any(a == "-n" or a.startswith("-n") or a.startswith("--numprocesses") for a in args):
        return []
    if "no:xdist" in args:
        return []
    return ["-n", "2", "--dist", "loadfile", "--no-loadscope-reorder"]


def main(argv: list[str]) -> int:
    command, rest = (argv[0], argv[1:]) if argv else ("help", [])
    if command == "setup":
        setup(local_model=True, browser=True)
        return 0
    if command == "demo":
        setup(local_model=True, browser=False)
        return subprocess.call([str(VENV / "bin" / "toucan"), "demo", *rest], cwd=ROOT)
    if command == "test":
        setup(local_model=True, browser=True)
        return subprocess.call([str(VENV_PY), "-m", "pytest", *test_workers(rest), *rest], cwd=ROOT)
    print(__doc__)
    return 0 if command in ("help", "-h", "--help") else 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
