"""The seed data builds deterministically with the stdlib and duckdb, and only once."""

from __future__ import annotations

import sqlite3
import subprocess
from pathlib import Path

import duckdb

from mcp_env.fleet.seed import MARKER_NAME, build_seed


def test_seed_holds_databases_repo_and_documents(tmp_path: Path) -> None:
    seed_dir = tmp_path / "seed"

    assert build_seed(seed_dir)

    with sqlite3.connect(seed_dir / "company.db") as company:
        tables = {row[0] for row in company.execute("SELECT name FROM sqlite_master")}
        headcount = company.execute("SELECT SUM(headcount) FROM department_headcount").fetchone()
    company.close()
    assert {"departments", "employees", "products", "orders"} <= tables
    assert headcount == (12,)
    analytics = duckdb.connect(str(seed_dir / "analytics.duckdb"), read_only=True)
    try:
        assert analytics.execute("SELECT COUNT(*) FROM monthly_sales").fetchall() == [(240,)]
    finally:
        analytics.close()
    log = subprocess.run(
        ["git", "log", "--format=%s"], cwd=seed_dir / "repo", capture_output=True, text=True
    )
    assert log.stdout.splitlines()[-1] == "Add pricing script and README"
    assert len(log.stdout.splitlines()) == 3
    pdf = (seed_dir / "docs/employee_handbook.pdf").read_bytes()
    assert pdf.startswith(b"%PDF-1.4") and pdf.rstrip().endswith(b"%%EOF")
    assert b"/Count 2" in pdf
    for name in ("docs/quarterly_report.docx", "docs/product_launch.pptx", "xlsx/sales_2025.xlsx"):
        assert (seed_dir / name).read_bytes()[:2] == b"PK", name
    assert (seed_dir / "files/data/customers.csv").is_file()


def test_seed_is_identical_across_builds_and_skipped_when_current(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    assert build_seed(first) and build_seed(second)
    head_a = subprocess.run(["git", "rev-parse", "HEAD"], cwd=first / "repo", capture_output=True)
    head_b = subprocess.run(["git", "rev-parse", "HEAD"], cwd=second / "repo", capture_output=True)
    assert head_a.stdout == head_b.stdout
    assert (first / "docs/employee_handbook.pdf").read_bytes() == (
        second / "docs/employee_handbook.pdf"
    ).read_bytes()

    (first / "company.db").unlink()
    assert build_seed(first)  # marker still matches: nothing is rebuilt
    assert not (first / "company.db").exists()
    (first / MARKER_NAME).write_text("stale\n")
    assert build_seed(first)
    assert (first / "company.db").exists()
