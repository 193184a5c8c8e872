"""The installer on a fresh directory: one small real server, markers, re-install, bad names."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from mcp_env.fleet.install import MARKER_NAME, install_fleet, main
from toucan.errors import CatalogError


def test_a_fresh_install_then_a_no_op_then_a_repair(tmp_path: Path) -> None:
    report = install_fleet(tmp_path, ["kglite"])

    assert report.installed == ["kglite"] and report.seed_ok and report.meets_minimum
    venv = tmp_path / "venvs" / "kglite"
    server = venv / "bin" / "kglite-mcp-server"
    assert server.is_file()
    imported = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import kglite; print(kglite.__name__)"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert imported.stdout.strip() == "kglite"

    again = install_fleet(tmp_path, ["kglite"])
    assert [r.skipped for r in again.results] == [True]

    (venv / MARKER_NAME).write_text("another lock\n")
    repaired = install_fleet(tmp_path, ["kglite"])
    assert [(r.ok, r.skipped) for r in repaired.results] == [(True, False)]
    assert server.is_file()


def test_unknown_server_names_are_refused(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="no-such-server"):
        install_fleet(tmp_path, ["no-such-server"])
    assert main(["--fleet-dir", str(tmp_path), "--only", "no-such-server"]) == 2
