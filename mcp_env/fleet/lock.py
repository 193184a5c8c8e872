"""Regenerate the committed fleet locks: `python -m mcp_env.fleet.lock [--only NAME ...]`.

A maintainer step, not part of install: PyPI servers get `uv pip compile` output with every
transitive pin; npm servers get a package.json plus `npm install --package-lock-only` output.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

from mcp_env.fleet.catalog import LOCKS_DIR, InstallUnit, list_install_units
from mcp_env.fleet.tools import find_python, find_uv


def write_pypi_lock(unit: InstallUnit) -> None:
    uv = find_uv()
    if uv is None:
        raise SystemExit("uv is needed to compile PyPI locks")
    requirements = "\n".join([unit.requirement, *unit.extra]) + "\n"
    subprocess.run(
        [
            uv,
            "pip",
            "compile",
            "--quiet",
            "--no-header",
            "--python",
            str(find_python(unit.python)),
            "--python-version",
            unit.python,
            "-o",
            str(unit.lock_path),
            "-",
        ],
        input=requirements,
        text=True,
        check=True,
    )


def write_npm_lock(unit: InstallUnit) -> None:
    prefix = unit.lock_path.parent
    prefix.mkdir(parents=True, exist_ok=True)
    name, _, version = unit.requirement.rpartition("@")
    manifest = {
        "name": f"toucan-fleet-{unit.name}",
        "private": True,
        "dependencies": {name: version},
    }
    (prefix / "package.json").write_text(json.dumps(manifest, indent=2) + "\n")
    subprocess.run(
        ["npm", "install", "--package-lock-only", "--no-audit", "--no-fund", "--ignore-scripts"],
        cwd=prefix,
        check=True,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", nargs="*", default=None)
    args = parser.parse_args(argv)
    LOCKS_DIR.mkdir(exist_ok=True)
    for unit in list_install_units():
        if args.only and unit.name not in args.only:
            continue
        print(f"[lock] {unit.name} ({unit.requirement})", flush=True)
        (write_pypi_lock if unit.registry == "pypi" else write_npm_lock)(unit)
    return 0


if __name__ == "__main__":
    sys.exit(main())
