"""Where uv is: the installers (fleet, embedded model) drive it as a subprocess."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path


def find_uv() -> str | None:
    """$UV, else uv next to the running interpreter (dev.py puts it in .venv), else PATH."""
    for candidate in (os.environ.get("UV"), str(Path(sys.executable).parent / "uv")):
        if candidate and Path(candidate).is_file():
            return candidate
    return shutil.which("uv")
