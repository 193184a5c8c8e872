"""Build the fleet's seed data (databases, a git repo, documents) deterministically.

Small text files and the three Office documents are committed under seed/; the SQLite and
DuckDB databases, the git repo and the PDF are generated here with the stdlib and duckdb.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import subprocess
from pathlib import Path

import duckdb

from mcp_env.fleet.seed_data import (
    ANALYTICS_SQL,
    COMPANY_SQL,
    HANDBOOK_PAGES,
    REPO_COMMITS,
)

SEED_SOURCE = Path(__file__).resolve().parent / "seed"
MARKER_NAME = ".toucan-seed-marker"
DUCKDB_STORAGE_VERSION = "v1.2.0"  # readable by the older duckdb inside the motherduck venv


def hash_seed_sources() -> str:
    digest = hashlib.sha256()
    for path in sorted(SEED_SOURCE.rglob("*")):
        if path.is_file():
            digest.update(str(path.relative_to(SEED_SOURCE)).encode() + path.read_bytes())
    for module in ("seed.py", "seed_data.py"):
        digest.update((Path(__file__).resolve().parent / module).read_bytes())
    return digest.hexdigest()


def build_seed(seed_dir: Path) -> bool:
    """(Re)build seed_dir unless its marker matches the sources; True when it is ready."""
    expected = hash_seed_sources()
    marker = seed_dir / MARKER_NAME
    if marker.is_file() and marker.read_text().strip() == expected:
        return True
    staging = seed_dir.with_name(seed_dir.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        write_seed(staging)
    except (OSError, subprocess.CalledProcessError, sqlite3.Error, duckdb.Error) as exc:
        print(f"[fleet] seed data FAILED: {exc}", flush=True)
        shutil.rmtree(staging, ignore_errors=True)
        return False
    (staging / MARKER_NAME).write_text(expected + "\n")
    shutil.rmtree(seed_dir, ignore_errors=True)
    staging.rename(seed_dir)
    return True


def write_seed(seed_dir: Path) -> None:
    shutil.copytree(SEED_SOURCE / "files", seed_dir / "files")
    (seed_dir / "docs").mkdir()
    (seed_dir / "xlsx").mkdir()
    for document in sorted((SEED_SOURCE / "office").iterdir()):
        target = "xlsx" if document.suffix == ".xlsx" else "docs"
        shutil.copyfile(document, seed_dir / target / document.name)
    shutil.copyfile(
        seed_dir / "files/notes/meeting_2026-03-02.md", seed_dir / "docs/meeting_notes.md"
    )
    shutil.copyfile(seed_dir / "files/data/customers.csv", seed_dir / "docs/customers.csv")
    write_pdf(seed_dir / "docs/employee_handbook.pdf", HANDBOOK_PAGES)
    write_sqlite(seed_dir / "company.db")
    write_duckdb(seed_dir / "analytics.duckdb")
    write_git_repo(seed_dir / "repo")


def write_sqlite(path: Path) -> None:
    with sqlite3.connect(path) as connection:
        connection.executescript(COMPANY_SQL)
    connection.close()


def write_duckdb(path: Path) -> None:
    connection = duckdb.connect()
    try:
        connection.execute(f"ATTACH '{path}' AS seed (STORAGE_VERSION '{DUCKDB_STORAGE_VERSION}')")
        connection.execute("USE seed")
        connection.execute(ANALYTICS_SQL)
        connection.execute("USE memory")
        connection.execute("DETACH seed")
    finally:
        connection.close()


def write_git_repo(repo: Path) -> None:
    """A small repo with a few dated commits and one untracked file, identical on every build."""
    repo.mkdir()
    base_env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(repo),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_AUTHOR_NAME": "Priya Raman",
        "GIT_AUTHOR_EMAIL": "priya@northwind.example",
        "GIT_COMMITTER_NAME": "Priya Raman",
        "GIT_COMMITTER_EMAIL": "priya@northwind.example",
    }

    def git(*args: str, date: str = "2026-01-05T09:00:00+01:00") -> None:
        env = {**base_env, "GIT_AUTHOR_DATE": date, "GIT_COMMITTER_DATE": date}
        subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True)

    git("init", "--quiet", "--initial-branch=main")
    for commit in REPO_COMMITS:
        for relative, content in commit["files"].items():
            (repo / relative).parent.mkdir(parents=True, exist_ok=True)
            (repo / relative).write_text(content)
        git("add", "--all")
        git("commit", "--quiet", "-m", commit["message"], date=commit["date"])
    (repo / "scratch.txt").write_text("ideas: add a --json flag to the quote command\n")


def write_pdf(path: Path, pages: list[list[str]]) -> None:
    """A plain PDF 1.4 with one Helvetica text block per page."""
    objects: list[bytes] = [b"", b""]  # 1: catalog, 2: page tree, filled at the end
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")  # 3
    page_ids = []
    for lines in pages:
        text = ["BT", "/F1 11 Tf", "14 TL", "72 770 Td"]
        for index, line in enumerate(lines):
            escaped = line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
            text.append(f"/F1 {15 if index == 0 else 11} Tf ({escaped}) Tj T*")
        stream = "\n".join([*text, "ET"]).encode("latin-1")
        objects.append(b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream))
        content_id = len(objects)
        objects.append(
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] "
            b"/Resources << /Font << /F1 3 0 R >> >> /Contents %d 0 R >>" % content_id
        )
        page_ids.append(len(objects))
    kids = b" ".join(b"%d 0 R" % page_id for page_id in page_ids)
    objects[0] = b"<< /Type /Catalog /Pages 2 0 R >>"
    objects[1] = b"<< /Type /Pages /Kids [%s] /Count %d >>" % (kids, len(page_ids))
    body = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, content in enumerate(objects, start=1):
        offsets.append(len(body))
        body += b"%d 0 obj\n%s\nendobj\n" % (number, content)
    xref_at = len(body)
    body += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    body += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    body += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref_at,
    )
    path.write_bytes(bytes(body))
