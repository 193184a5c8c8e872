"""Find the external programs the fleet installer drives: uv, a given Python, npm."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from toucan.uv import find_uv

__all__ = ["find_python", "find_uv"]

PYENV_VERSIONS = Path("/root/.pyenv/versions")


def find_python(version: str) -> Path:
    """An interpreter for `version` ("3.12"): pyenv's newest patch, else pythonX.Y on PATH."""
    if PYENV_VERSIONS.is_dir():
        matches = sorted(
            (p for p in PYENV_VERSIONS.iterdir() if p.name.startswith(version + ".")),
            key=lambda p: [int(part) for part in p.name.split(".") if part.isdigit()],
        )
        for match in reversed(matches):
            if (match / "bin" / "python3").is_file():
                return match / "bin" / "python3"
    found = shutil.which(f"python{version}")
    if found:
        return Path(found)
    if f"{sys.version_info.major}.{sys.version_info.minor}" == version:
        return Path(sys.executable)
    raise FileNotFoundError(f"no Python {version} interpreter found")
