"""Faults on a real store: a stage process SIGKILLed mid-run and re-run (no row lost, none
duplicated, finished items not redone), and a second run on the same store refused."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from cli import app
from tests.fake_llm import FakeLlm
from tests.synthesize.seed import FAKE_KEY_ENV, competent_model, seed_servers, write_config
from toucan.records import Run, Task
from toucan.store import Store

ROOT = Path(__file__).resolve().parents[2]
LIMIT = 520  # one full batch of 512 (tasks.llm_batch.BATCH_ITEMS) and one of 8
WAIT_S = 240.0
ORPHAN_WAIT_S = 600.0  # the Prefect client retries a lost API with backoff before giving up

pytestmark = pytest.mark.usefixtures("prefect_harness")


@pytest.fixture
def fake_llm(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeLlm]:
    monkeypatch.setenv(FAKE_KEY_ENV, "sk-fake")
    with FakeLlm(default=competent_model, latency=0.02) as server:
        yield server


def child_env() -> dict[str, str]:
    """The test's Prefect API (the session harness), so the child starts no server of its own."""
    from prefect.settings import PREFECT_API_URL

    env = {k: v for k, v in os.environ.items() if not k.startswith("TOUCAN_")}
    env["PREFECT_API_URL"] = str(PREFECT_API_URL.value())
    return env


def start_cli(
    arguments: list[str], log: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """`python -m cli ARGUMENTS` in its own session (so `kill_group` takes every process it
    starts), stdout and stderr appended to `log`, with `child_env()` unless `env` is given."""
    with log.open("ab") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", "cli", *arguments], cwd=ROOT, env=env or child_env(),
            stdout=sink, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip


def start_synthesize(store: Path, config: Path, log: Path) -> subprocess.Popen[bytes]:
    return start_cli(
        ["synthesize", "--store", str(store), "--config", str(config), "--limit", str(LIMIT),
         "--seed", "7", "--json"],
        log,
    )  # fmt: skip


def kill_group(process: subprocess.Popen[bytes]) -> None:
    """kill -9 a CLI run started in its own session, with every process it started."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(30)


def finished_task_ids(store: Store) -> set[str]:
    return (
        {row[0] for row in store.query("SELECT task_id FROM tasks")} if store.count(Task) else set()
    )


def wait_until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.timeout(900)
@pytest.mark.slow
def test_sigkill_mid_stage_then_rerun_loses_nothing_duplicates_nothing_and_redoes_nothing(
    tmp_path: Path, fake_llm: FakeLlm
) -> None:
    store = Store(tmp_path / "s.duckdb")
    seed_servers(store)
    slow = write_config(tmp_path / "slow.yaml", fake_llm.base_url, synthesize={"concurrency": 4})
    fast = write_config(tmp_path / "fast.yaml", fake_llm.base_url, synthesize={"concurrency": 64})
    log = tmp_path / "run.log"

    first = start_synthesize(store.path, slow, log)
    try:
        wait_until(lambda: store.count(Task) > 0 or first.poll() is not None, WAIT_S, "a batch")
        assert first.poll() is None, log.read_text()[-3000:]

        # a second run on the same store while the first writes: refused, clearly
        refused = CliRunner().invoke(
            app, ["synthesize", "--store", str(store.path), "--config", str(slow),
                  "--limit", str(LIMIT), "--seed", "7"],
        )  # fmt: skip
        assert refused.exit_code == 2
        assert "another toucan run is writing" in refused.output
    finally:
        kill_group(first)
    before = {t.task_id: t for t in store.select(Task)}
    assert 0 < len(before) < LIMIT
    killed = next(r for r in store.select(Run) if r.stage == "synthesize")
    status = CliRunner().invoke(app, ["status", "--store", str(store.path), "--json"])
    assert json.loads(status.stdout)["status"] == "crashed"  # running, but its process is gone

    calls_before = fake_llm.calls.total
    second = start_synthesize(store.path, fast, log)
    assert second.wait(WAIT_S) == 0, log.read_text()[-3000:]
    redone_calls = fake_llm.calls.total - calls_before
    closed = store.select(Run, "run_id = ?", [killed.run_id])[0]
    assert closed.status == "crashed"  # the next writing run recorded what status showed

    after = store.select(Task)
    assert len(after) == LIMIT  # nothing lost
    assert len({t.task_id for t in after}) == len(after)  # nothing duplicated
    # finished rows stay as they were; only retryable error rows may be redone (and replaced)
    finished = {i for i, t in before.items() if t.status != "error"}
    kept = {t.task_id: t for t in after if t.task_id in finished}
    assert all(kept[i].run_id == killed.run_id for i in finished)
    assert 0 < redone_calls <= LIMIT - len(finished)  # finished items were not asked again


@pytest.fixture
def doomed_prefect_server(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A real local Prefect server (SQLite) that the test will kill."""
    import socket

    import httpx

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env["PREFECT_HOME"] = str(tmp_path / "prefect-home")
    server = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
         "--port", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    api = f"http://127.0.0.1:{port}/api"

    def healthy() -> bool:
        try:
            return httpx.get(f"{api}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(lambda: healthy() or server.poll() is not None, 600, "the Prefect server")
        assert server.poll() is None
        yield api, server
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(30)


@pytest.mark.timeout(1200)
@pytest.mark.slow
def test_a_prefect_server_stopped_mid_run_leaves_a_sound_store_that_a_rerun_completes(
    tmp_path: Path, fake_llm: FakeLlm, doomed_prefect_server: tuple[str, subprocess.Popen[bytes]]
) -> None:
    api, server = doomed_prefect_server
    store = Store(tmp_path / "s.duckdb")
    seed_servers(store)
    fast = write_config(tmp_path / "fast.yaml", fake_llm.base_url, synthesize={"concurrency": 64})
    log = tmp_path / "run.log"
    # Prefect's client retries a lost API 5 times with backoff per request (minutes in all);
    # what this test is about is the store and the rerun, so let the run give up sooner.
    env = {**child_env(), "PREFECT_API_URL": api, "PREFECT_CLIENT_MAX_RETRIES": "1"}
    run = start_cli(
        ["synthesize", "--store", str(store.path), "--config", str(fast), "--limit", str(LIMIT),
         "--seed", "7", "--json"],
        log,
        env,
    )  # fmt: skip
    try:
        wait_until(lambda: store.count(Task) > 0 or run.poll() is not None, WAIT_S, "a batch")
        os.killpg(server.pid, signal.SIGKILL)  # the API goes away mid-stage
        server.wait(30)
        try:
            run.wait(ORPHAN_WAIT_S)  # finishes or fails, but ends on its own
        except subprocess.TimeoutExpired as exc:
            raise AssertionError(
                f"the run hung without its API: {log.read_text()[-3000:]}"
            ) from exc
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
            run.wait(30)
    ended = next(r for r in store.select(Run) if r.stage == "synthesize")
    assert ended.status in ("completed", "failed")  # its own outcome was recorded either way
    before = {t.task_id for t in store.select(Task)}
    assert len(before) == store.count(Task) > 0  # the store opens, every row reads back

    rerun = start_synthesize(store.path, fast, log)
    assert rerun.wait(WAIT_S) == 0, log.read_text()[-3000:]
    after = {t.task_id for t in store.select(Task)}
    assert len(after) == store.count(Task) == LIMIT and before <= after
