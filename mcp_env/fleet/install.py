"""Install the bundled offline fleet: `python -m mcp_env.fleet.install [--fleet-dir .fleet] [--only NAME ...]`.

One venv per PyPI server (from its committed lock, exact pins, byte-compiled) and one npm prefix
per npm server (`npm ci` from its committed lockfile), plus the seed data. Idempotent: a marker
holding the lock's hash lets a second run skip what is already installed. A failed server is
reported and skipped; only too few installed servers is an error.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pydantic import BaseModel, Field

from mcp_env.fleet.catalog import InstallUnit, list_install_units, load_fleet_catalog
from mcp_env.fleet.seed import build_seed
from mcp_env.fleet.tools import find_python, find_uv
from toucan.errors import CatalogError
from toucan.secrets import REGISTRY_PREFIXES, without_secrets

__all__ = ["FleetInstallReport", "UnitResult", "install_fleet", "load_fleet_catalog", "main"]

MIN_SERVERS = 15  # the fleet is useful for synthesis only with this many working servers
PARALLEL_INSTALLS = 2  # the target machines have 2 cores; npm native builds use one each
MARKER_NAME = ".toucan-fleet-marker"


class UnitResult(BaseModel):
    name: str
    ok: bool
    skipped: bool = False  # already installed with the same lock
    seconds: float = 0.0
    error: str = ""


class FleetInstallReport(BaseModel):
    fleet_dir: str
    results: list[UnitResult] = Field(default_factory=list)
    seed_ok: bool = False
    seconds: float = 0.0
    notes: list[str] = Field(default_factory=list)

    @property
    def installed(self) -> list[str]:
        return [r.name for r in self.results if r.ok]

    @property
    def failed(self) -> list[str]:
        return [r.name for r in self.results if not r.ok]

    @property
    def meets_minimum(self) -> bool:
        """Enough servers (MIN_SERVERS, or all that were asked for) and the seed are ready."""
        return self.seed_ok and len(self.installed) >= min(MIN_SERVERS, len(self.results))


def hash_unit(unit: InstallUnit) -> str:
    """What the marker records: the lock's bytes plus the interpreter choice."""
    digest = hashlib.sha256(unit.lock_path.read_bytes())
    if unit.registry == "pypi":
        digest.update(f"python={unit.python}".encode())
    else:
        digest.update((unit.lock_path.parent / "package.json").read_bytes())
    return digest.hexdigest()


def locate_unit(fleet_dir: Path, unit: InstallUnit) -> Path:
    return fleet_dir / ("venvs" if unit.registry == "pypi" else "npm") / unit.name


def run_quietly(
    command: list[str],
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    check: bool = True,
) -> None:
    """Run a step; on failure raise with the tail of its output (unless check=False). The
    step runs third-party install scripts: it gets our environment minus provider keys."""
    env = without_secrets(os.environ if env is None else env, keep_prefixes=REGISTRY_PREFIXES)
    completed = subprocess.run(
        command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    if check and completed.returncode != 0:
        tail = "\n".join(completed.stdout.strip().splitlines()[-15:])
        raise RuntimeError(f"{' '.join(command[:3])} ... exited {completed.returncode}:\n{tail}")


def install_pypi_unit(unit: InstallUnit, target: Path) -> None:
    python = find_python(unit.python)
    uv = find_uv()
    if uv:
        run_quietly([uv, "venv", "--quiet", "--python", str(python), str(target)])
        run_quietly(
            [
                uv,
                "pip",
                "sync",
                "--quiet",
                "--python",
                str(target / "bin" / "python"),
                str(unit.lock_path),
            ]
        )
    else:
        run_quietly([str(python), "-m", "venv", str(target)])
        pip = [
            str(target / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ]
        run_quietly([*pip, "--no-deps", "-r", str(unit.lock_path)])
    # compile now, not at first start (a cold start of some servers takes 5-15 s otherwise);
    # best effort: some packages ship Python 2 files that never compile
    compile_command = [str(target / "bin" / "python"), "-m", "compileall", "-q", "-j", "0"]
    run_quietly([*compile_command, str(target / "lib")], check=False)


def install_npm_unit(unit: InstallUnit, target: Path) -> None:
    target.mkdir(parents=True)
    for name in ("package.json", "package-lock.json"):
        shutil.copyfile(unit.lock_path.parent / name, target / name)
    env = {**os.environ, "PUPPETEER_SKIP_DOWNLOAD": "1", "npm_config_update_notifier": "false"}
    run_quietly(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=target, env=env)


def install_unit(fleet_dir: Path, unit: InstallUnit) -> UnitResult:
    """Install one server unless its marker already matches its lock."""
    started = time.monotonic()
    target = locate_unit(fleet_dir, unit)
    marker = target / MARKER_NAME
    expected = hash_unit(unit)
    if marker.is_file() and marker.read_text().strip() == expected:
        return UnitResult(name=unit.name, ok=True, skipped=True)
    # the marker is written last, so an interrupted install is redone on the next run
    shutil.rmtree(target, ignore_errors=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        (install_pypi_unit if unit.registry == "pypi" else install_npm_unit)(unit, target)
    except (RuntimeError, OSError) as exc:
        shutil.rmtree(target, ignore_errors=True)
        return UnitResult(
            name=unit.name, ok=False, seconds=time.monotonic() - started, error=str(exc)
        )
    marker.write_text(expected + "\n")
    return UnitResult(name=unit.name, ok=True, seconds=time.monotonic() - started)


def ensure_system_packages(report: FleetInstallReport) -> None:
    """bubblewrap (the sandbox) and git (the git servers); apt-get them if we are root."""
    missing = [
        pkg for pkg, exe in (("bubblewrap", "bwrap"), ("git", "git")) if not shutil.which(exe)
    ]
    if not missing:
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        report.notes.append(f"missing system packages (install them yourself): {' '.join(missing)}")
        return
    print(f"[fleet] apt-get install -y {' '.join(missing)}", flush=True)
    install_command = ["apt-get", "install", "-y", *missing]
    completed = subprocess.run(install_command, capture_output=True, text=True)
    if completed.returncode != 0:  # package lists may be empty on a fresh image
        subprocess.run(["apt-get", "update"], capture_output=True, text=True)
        completed = subprocess.run(install_command, capture_output=True, text=True)
    outcome = "installed" if completed.returncode == 0 else "apt-get failed for"
    report.notes.append(f"{outcome} system packages: {' '.join(missing)}")


def install_fleet(fleet_dir: Path, only: list[str] | None = None) -> FleetInstallReport:
    """Install every catalog server (or only the named ones) and the seed data under fleet_dir."""
    started = time.monotonic()
    fleet_dir = Path(fleet_dir).resolve()
    fleet_dir.mkdir(parents=True, exist_ok=True)
    catalog_units = list_install_units()
    unknown = sorted(set(only or []) - {unit.name for unit in catalog_units})
    if unknown:
        raise CatalogError(f"not in the fleet catalog: {', '.join(unknown)}")
    units = [unit for unit in catalog_units if not only or unit.name in only]
    report = FleetInstallReport(fleet_dir=str(fleet_dir))
    ensure_system_packages(report)
    done = 0

    def install_and_print(unit: InstallUnit) -> UnitResult:
        nonlocal done
        result = install_unit(fleet_dir, unit)
        done += 1
        status = "skipped (up to date)" if result.skipped else "ok" if result.ok else "FAILED"
        lines = [f"[fleet] {done}/{len(units)} {unit.name} ... {status} ({result.seconds:.1f}s)"]
        if result.error:
            lines.append(f"[fleet]     {result.error}")
        sys.stdout.write("\n".join(lines) + "\n")  # one write: the two workers do not interleave
        sys.stdout.flush()
        return result

    with ThreadPoolExecutor(max_workers=PARALLEL_INSTALLS) as pool:
        report.results = list(pool.map(install_and_print, units))
    report.seed_ok = build_seed(fleet_dir / "seed")
    report.seconds = time.monotonic() - started
    return report


def print_summary(report: FleetInstallReport) -> None:
    skipped = sum(r.skipped for r in report.results)
    print(
        f"[fleet] {len(report.installed)}/{len(report.results)} servers ready "
        f"({skipped} already up to date), seed {'ok' if report.seed_ok else 'FAILED'}, "
        f"{report.seconds:.1f}s, in {report.fleet_dir}",
        flush=True,
    )
    for note in report.notes:
        print(f"[fleet] note: {note}", flush=True)
    if report.failed:
        print(f"[fleet] failed: {', '.join(report.failed)}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Install the bundled offline MCP fleet.")
    parser.add_argument("--fleet-dir", type=Path, default=Path(".fleet"))
    parser.add_argument("--only", nargs="*", default=None, metavar="NAME")
    args = parser.parse_args(argv)
    try:
        report = install_fleet(args.fleet_dir, args.only)
    except CatalogError as exc:
        print(f"[fleet] {exc}", file=sys.stderr)
        return 2
    print_summary(report)
    return 0 if report.meets_minimum else 1


if __name__ == "__main__":
    sys.exit(main())
