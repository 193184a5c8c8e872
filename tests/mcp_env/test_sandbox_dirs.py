"""Sandbox dirs of killed runs: the next run removes them, in both sandbox modes (bubblewrap,
and the helper launch used where bubblewrap cannot run), and keeps live and unknown entries."""

from __future__ import annotations

import shutil
import signal
import subprocess
from pathlib import Path

import anyio
import psutil
import pytest

from mcp_env.pool import SessionPool
from mcp_env.sandbox_dirs import SANDBOX_PREFIX, remove_stale_sandboxes
from tests.mcp_env.conftest import PYTHON, wait_until
from tests.mcp_env.test_confinement import DRIVER, DRIVER_TIMEOUT_S, peek_spec

NO_BWRAP = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bwrap is not installed")


def any_process_mentions(root: Path) -> bool:
    for process in psutil.process_iter(["cmdline"]):
        if str(root) in " ".join(process.info["cmdline"] or []):
            return True
    return False


@pytest.mark.parametrize("mode", [pytest.param("bwrap", marks=NO_BWRAP), "helper"])
def test_a_killed_runs_sandbox_is_removed_by_the_next_run(tmp_path: Path, mode: str) -> None:
    root = tmp_path / "boxes"
    argv = [PYTHON, str(DRIVER), peek_spec().model_dump_json(), mode, str(root), "--hold"]
    driver = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert driver.stdout is not None and driver.stdout.readline().strip() == "ready"
        left = sorted(p.name for p in root.iterdir())
        driver.send_signal(signal.SIGKILL)
        driver.wait(timeout=DRIVER_TIMEOUT_S)
    finally:
        if driver.poll() is None:
            driver.kill()
        for pipe in (driver.stdin, driver.stdout):
            if pipe is not None:
                pipe.close()
    assert any(Path(root, name).is_dir() for name in left)  # the server's working dir
    assert all(name.startswith(SANDBOX_PREFIX) for name in left)
    if mode == "bwrap":
        assert any(name.endswith(".etc") for name in left)  # its passwd and group
    assert wait_until(lambda: not any_process_mentions(root), 30)  # the server died with it
    assert sorted(p.name for p in root.iterdir()) == left  # nobody cleaned up

    async def next_run() -> None:
        async with SessionPool(sandbox_root=root) as pool:
            await pool.list_tools(pool.register(peek_spec()))

    anyio.run(next_run)
    assert not [p for p in root.iterdir() if p.name in left]


def test_stale_clean_up_keeps_live_and_unknown_entries(tmp_path: Path) -> None:
    finished = subprocess.Popen([PYTHON, "-c", "pass"])
    started = int(psutil.Process(finished.pid).create_time())
    finished.wait()
    me = psutil.Process()
    entries = {
        "dead": f"mcp-sbx-{finished.pid}-{started}-abc",
        "dead_etc": f"mcp-sbx-{finished.pid}-{started}-abc.etc",
        "dead_log": f"mcp-sbx-{finished.pid}-{started}-abc.stderr.log",
        "pid_reused": f"mcp-sbx-{me.pid}-1-def",
        "live": f"mcp-sbx-{me.pid}-{int(me.create_time())}-ghi",
        "old_format": "mcp-sbx-k2j3h4",
        "unrelated": "other-dir",
    }
    for key, name in entries.items():
        if key.endswith("log"):
            (tmp_path / name).touch()
        else:
            (tmp_path / name).mkdir()
    removed = {path.name for path in remove_stale_sandboxes(tmp_path)}
    expected = {entries[key] for key in ("dead", "dead_etc", "dead_log", "pid_reused")}
    assert removed == expected
    assert {p.name for p in tmp_path.iterdir()} == set(entries.values()) - expected
