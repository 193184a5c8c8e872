"""End to end: the `toucan onboard` command on a fresh store, as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from toucan.records import Server, Tool
from toucan.store import Store

ROOT = Path(__file__).resolve().parents[2]
TOUCAN = [sys.executable, "-m", "cli"]
SMITHERY = ROOT / "catalogs" / "smithery" / "servers.jsonl"


def run_toucan(
    *args: str, timeout: float = 600, sandbox_root: Path | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOUCAN_")}
    if sandbox_root is not None:  # the servers' working dirs: how the test finds its processes
        env["TOUCAN_MCP__SANDBOX_ROOT"] = str(sandbox_root)
    return subprocess.run(
        [*TOUCAN, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


def child_server_processes(sandbox_root: Path) -> list[psutil.Process]:
    """Servers started under this test's sandbox root (other runs on the machine have their
    own fleet servers, which are none of this test's business)."""
    root = str(sandbox_root)
    found = []
    for proc in psutil.process_iter(["cmdline", "cwd"]):
        cmdline = " ".join(proc.info.get("cmdline") or [])
        if root in cmdline or (proc.info.get("cwd") or "").startswith(root):
            found.append(proc)
    return found


@pytest.mark.slow
def test_onboarding_the_bundled_fleet_meets_the_bar_and_a_rerun_adds_no_rows(
    tmp_path: Path,
) -> None:
    store_path = tmp_path / "fleet.duckdb"
    sandboxes = tmp_path / "sandboxes"
    first = run_toucan("onboard", "--store", str(store_path), "--json", sandbox_root=sandboxes)
    assert first.returncode == 0, first.stderr[-3000:]
    payload = json.loads(first.stdout)
    summary = payload["summary"]
    failed = [s for s in payload["servers"] if s["status"] != "ok"]
    assert summary["ok"] >= 15, failed
    assert summary["tools"] >= 200
    assert summary["domains"] >= 7
    transports = {s["transport"] for s in payload["servers"] if s["status"] == "ok"}
    assert "streamable-http" in transports and "stdio" in transports
    store = Store(store_path)
    counts = (store.count(Server), store.count(Tool))

    second = run_toucan("onboard", "--store", str(store_path), "--json", sandbox_root=sandboxes)
    assert second.returncode == 0, second.stderr[-3000:]
    assert (store.count(Server), store.count(Tool)) == counts
    assert sandboxes.is_dir()  # the servers ran under this root (their own dirs are gone)
    deadline = time.monotonic() + 10
    while child_server_processes(sandboxes) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert child_server_processes(sandboxes) == []


@pytest.mark.slow
def test_specs_only_accounts_for_every_smithery_entry_quickly(tmp_path: Path) -> None:
    store_path = tmp_path / "smithery.duckdb"
    started = time.monotonic()
    result = run_toucan(
        "onboard", "--catalog", str(SMITHERY), "--specs-only", "--store", str(store_path), "--json"
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr[-3000:]
    payload = json.loads(result.stdout)
    lines = sum(1 for line in SMITHERY.read_text().splitlines() if line.strip())
    assert payload["summary"]["total"] == lines == 1699
    rejected = [s for s in payload["servers"] if s["status"] == "rejected"]
    assert all(s["reason"] for s in rejected)
    needs_keys = [s for s in payload["servers"] if s["needs_credentials"]]
    assert needs_keys, "credential requirements must be detected"
    assert payload["summary"]["tools"] > 3000
    # The stage itself (parse, build, store 1,699 servers and their tools) must take well
    # under a minute; the process total also pays interpreter and Prefect start-up, which on
    # a loaded machine can take longer than the work, so it only gets a loose bound.
    [(stage_seconds,)] = Store(store_path).query(
        "SELECT epoch(finished_at) - epoch(started_at) FROM runs WHERE stage = 'onboard'"
    )
    assert stage_seconds < 60
    assert elapsed < 300
    assert Store(store_path).count(Server) == 1699


@pytest.mark.slow
@pytest.mark.parametrize("content", ["servers: [unclosed\n", "{not json"])
def test_a_catalog_that_does_not_parse_is_one_rejection_not_a_crash(
    tmp_path: Path, content: str
) -> None:
    catalog = tmp_path / ("bad.yaml" if content.startswith("servers") else "bad.json")
    catalog.write_text(content)
    result = run_toucan(
        "onboard", "--catalog", str(catalog), "--store", str(tmp_path / "s.duckdb"), "--json"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    payload = json.loads(result.stdout)
    assert payload["summary"]["rejected"] == 1
    assert payload["servers"][0]["reason"] in {"invalid_yaml", "invalid_json"}
