"""A failing command, run as a user runs it (a process): one stderr line that ends in its
reason token, exit 2 for toucan's own errors and 1 for the system's, no traceback unless
--debug; bad settings and a bad store fail before Prefect starts and create nothing."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from cli.preflight import HEADER_BYTES, check_store_file
from tests.synthesize.seed import seed_servers
from toucan.errors import OS_ERROR_REASONS
from toucan.store import Store

ROOT = Path(__file__).resolve().parents[2]
LINE = re.compile(r"^error: .+ \[(?P<reason>[a-z_]+)\]$")


def toucan(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("TOUCAN_")}
    return subprocess.run(
        [sys.executable, "-m", "cli", *args],
        cwd=ROOT,
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def one_line_reason(done: subprocess.CompletedProcess[str]) -> str:
    """The reason token of the one line the failure printed; fails on anything more."""
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr[-3000:]
    match = LINE.match(lines[0])
    assert match, lines[0]
    return match["reason"]


@pytest.fixture
def real_store(tmp_path: Path) -> Path:
    store = Store(tmp_path / "real.duckdb")
    seed_servers(store)
    return store.path


def test_an_unknown_config_key_is_one_line_exit_2_and_creates_no_store(tmp_path: Path) -> None:
    config = tmp_path / "toucan.yaml"
    config.write_text("trajectories: {concurency: 16}\n")
    store = tmp_path / "new" / "s.duckdb"
    done = toucan("synthesize", "--config", str(config), "--store", str(store), "--limit", "1")
    assert (done.returncode, one_line_reason(done)) == (2, "bad_config")
    assert "trajectories.concurency" in done.stderr
    assert not store.parent.exists()


def test_a_bad_store_memory_limit_is_one_line_exit_2(real_store: Path) -> None:
    done = toucan("status", "--store", str(real_store), env={"TOUCAN_STORE_MEMORY_LIMIT": "lots"})
    assert (done.returncode, one_line_reason(done)) == (2, "bad_config")
    assert "TOUCAN_STORE_MEMORY_LIMIT" in done.stderr


def test_a_truncated_store_is_one_line_exit_2_and_is_left_as_it_was(real_store: Path) -> None:
    cut = real_store.read_bytes()[: real_store.stat().st_size // 3]  # its catalog still opens
    real_store.write_bytes(cut)
    done = toucan("synthesize", "--store", str(real_store), "--profile", "local", "--limit", "1")
    assert (done.returncode, one_line_reason(done)) == (2, "store_error")
    assert real_store.read_bytes() == cut
    # a read-only command meets the missing blocks in a query: the same line
    listed = toucan("servers", "--store", str(real_store))
    assert (listed.returncode, one_line_reason(listed)) == (2, "store_error")


def test_a_store_whose_freed_last_blocks_duckdb_cut_off_is_not_called_truncated(
    real_store: Path,
) -> None:
    # a table dropped, then a checkpoint: DuckDB shortens the file but still counts the freed
    # blocks in total_blocks (seen after kill -9 reruns, where the stage was then refused)
    with duckdb.connect(str(real_store)) as con:
        con.execute(
            "CREATE TABLE scratch AS SELECT range AS i, repeat('x', 100) AS s FROM range(300000)"
        )
        con.execute("CHECKPOINT")
        con.execute("DROP TABLE scratch")
        con.execute("CHECKPOINT")
    with duckdb.connect(str(real_store), read_only=True) as con:
        size, blocks = con.execute(
            "SELECT block_size, total_blocks FROM pragma_database_size()"
        ).fetchone()
    assert real_store.stat().st_size < HEADER_BYTES + size * blocks  # the case itself
    check_store_file(real_store)  # no StoreError
    listed = toucan("servers", "--store", str(real_store))
    assert listed.returncode == 0, listed.stderr[-3000:]


def test_a_junk_store_file_is_one_line_exit_2_for_stage_and_status_commands(
    tmp_path: Path,
) -> None:
    junk = tmp_path / "junk.duckdb"
    junk.write_text("this is no database\n" * 100)
    done = toucan("filter-tasks", "--store", str(junk), "--profile", "local")
    assert (done.returncode, one_line_reason(done)) == (2, "store_error")
    status = toucan("status", "--store", str(junk))
    assert (status.returncode, one_line_reason(status)) == (2, "store_error")


def test_a_store_under_a_regular_file_is_refused_before_the_run(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    done = toucan("synthesize", "--store", str(blocker / "s.duckdb"), "--profile", "local")
    assert (done.returncode, one_line_reason(done)) == (2, "store_error")


def test_a_bad_option_is_one_line_exit_2() -> None:
    done = toucan("synthesize", "--limit", "many")
    assert (done.returncode, one_line_reason(done)) == (2, "bad_option")


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
def test_an_output_path_under_a_file_fails_inside_the_flow_run_with_one_line(
    tmp_path: Path, real_store: Path
) -> None:
    from prefect.settings import PREFECT_API_URL

    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    api = {"PREFECT_API_URL": str(PREFECT_API_URL.value())}  # the session's test server
    args = ("export", "--store", str(real_store), "--profile", "local")
    done = toucan(*args, "--out", str(blocker / "dataset"), env=api)
    reason = one_line_reason(done)
    assert done.returncode == 1 and reason in set(OS_ERROR_REASONS.values()), done.stderr
    # --debug (anywhere on the line) shows the traceback and Prefect's own log of the failure
    debugged = toucan(*args, "--out", str(blocker / "dataset"), "--debug", env=api)
    assert debugged.returncode == 1
    assert "Traceback" in debugged.stderr and "Flow run" in debugged.stderr
    assert done.stderr.strip() in debugged.stderr.splitlines()
