"""Nothing toucan starts outlives it: Prefect's ephemeral API server dies with a `kill -9`ed
run (parent-death signal) and a later run removes what a killed one recorded; SIGTERM ends a
run within seconds, exit 143, no child left, the run marked interrupted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from flows.prefect_api import RECORDS_DIR, reap_stale_servers, record_server
from mcp_env.sandbox_dirs import process_start
from tests.fake_llm import FakeLlm
from tests.ops.test_faults import wait_until
from tests.synthesize.seed import FAKE_KEY_ENV, competent_model, seed_servers, write_config
from toucan.records import Run
from toucan.store import Store

ROOT = Path(__file__).resolve().parents[2]
KILLS = 5  # issue 15, done when: "after 5 kill -9s of `toucan synthesize`"
START_WAIT_S = 600.0  # Prefect's API server alone took 60-245 s to start on a loaded box
GONE_WAIT_S = 60.0
SERVER_APP = "prefect.server.api.server:create_app"
SLEEPER = [sys.executable, "-c", "import time; time.sleep(120)"]


def api_servers(prefect_home: Path) -> list[psutil.Process]:
    """Live Prefect API server processes started with this PREFECT_HOME (ours, not the
    session's test server or another helper's)."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        try:
            if SERVER_APP not in (process.info["cmdline"] or []):
                continue
            home = process.environ().get("PREFECT_HOME")
            if home == str(prefect_home) and process.status() != psutil.STATUS_ZOMBIE:
                found.append(process)
        except psutil.Error:
            continue
    return found


@pytest.fixture(scope="module")
def prefect_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One PREFECT_HOME for the module's runs: Prefect's database is set up once."""
    return tmp_path_factory.mktemp("prefect-home")


@pytest.fixture
def slow_model(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeLlm]:
    monkeypatch.setenv(FAKE_KEY_ENV, "sk-fake")
    with FakeLlm(default=competent_model, latency=0.5) as server:
        yield server


def start_synthesize(
    tmp_path: Path, model: FakeLlm, prefect_home: Path, log: Path
) -> subprocess.Popen[bytes]:
    """`toucan synthesize` as its own process, with its own ephemeral Prefect API (no
    PREFECT_API_URL) under `prefect_home`; long enough to be killed mid-stage."""
    store = Store(tmp_path / "s.duckdb")
    if not store.path.exists():
        seed_servers(store)
    config = write_config(tmp_path / "c.yaml", model.base_url, synthesize={"concurrency": 2})
    drop = ("TOUCAN_", "PREFECT_API_URL")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env["PREFECT_HOME"] = str(prefect_home)
    with log.open("ab") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", "cli", "synthesize", "--store", str(store.path),
             "--config", str(config), "--limit", "200", "--seed", "7"],
            cwd=ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT,
        )  # fmt: skip


def kill_9_when_going(
    tmp_path: Path, model: FakeLlm, prefect_home: Path, *, early: bool
) -> set[int]:
    """Start a run and `kill -9` it (toucan only: its children are on their own) as soon as
    its API server is spawned (early) or the model is being asked; the API servers' pids."""
    records = prefect_home / RECORDS_DIR
    before, calls = set(records.glob("*.json")), model.calls.total
    log = tmp_path / "runs.log"
    run = start_synthesize(tmp_path, model, prefect_home, log)

    def going() -> bool:
        if run.poll() is not None:
            return True
        return bool(set(records.glob("*.json")) - before) if early else model.calls.total > calls

    try:
        wait_until(going, START_WAIT_S, "the run to get going")
        assert run.poll() is None, log.read_text()[-3000:]
        servers = {process.pid for process in api_servers(prefect_home)}
        run.send_signal(signal.SIGKILL)
        run.wait(30)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait(30)
    return servers


@pytest.mark.timeout(3000)
@pytest.mark.slow
def test_no_prefect_api_server_outlives_kill_9_of_toucan_synthesize(
    tmp_path: Path, slow_model: FakeLlm, prefect_home: Path
) -> None:
    seen: set[int] = set()
    for kill in range(KILLS):  # the first while its API server is still starting
        seen |= kill_9_when_going(tmp_path, slow_model, prefect_home, early=kill == 0)
    assert len(seen) >= KILLS  # the servers were there to be orphaned
    records = prefect_home / RECORDS_DIR
    wait_until(lambda: not api_servers(prefect_home), GONE_WAIT_S, "no toucan API server")
    # every later run removed the records of servers that were gone; the last one's stays
    assert len(list(records.glob("*.json"))) <= 1


@pytest.mark.timeout(1200)
@pytest.mark.slow
def test_sigterm_ends_a_run_within_10_s_with_exit_143_and_no_child_left(
    tmp_path: Path, slow_model: FakeLlm, prefect_home: Path
) -> None:
    log = tmp_path / "run.log"
    run = start_synthesize(tmp_path, slow_model, prefect_home, log)
    try:
        wait_until(
            lambda: slow_model.calls.total > 0 or run.poll() is not None,
            START_WAIT_S,
            "the run to ask the model",
        )
        assert run.poll() is None, log.read_text()[-3000:]
        children = psutil.Process(run.pid).children(recursive=True)
        assert children  # at least its API server
        asked = time.monotonic()
        run.send_signal(signal.SIGTERM)
        code = run.wait(60)
        took = time.monotonic() - asked
    finally:
        if run.poll() is None:
            run.kill()
            run.wait(30)
    assert code == 143, log.read_text()[-3000:]
    assert took < 10, took
    _, alive = psutil.wait_procs(children, timeout=5)
    assert alive == []
    assert (
        log.read_text().strip().splitlines()[-1] == "error: stopped by signal SIGTERM [interrupted]"
    )
    (stopped,) = Store(tmp_path / "s.duckdb").select(Run)
    assert stopped.status == "interrupted"


def test_a_child_armed_with_the_parent_death_signal_dies_with_its_parent(tmp_path: Path) -> None:
    # a parent that starts a sleeper the way ToucanApiServer starts uvicorn, then waits
    parent_code = (
        "import os, subprocess, sys, time\n"
        f"sys.path.insert(0, {str(ROOT)!r})\n"
        "from flows.prefect_api import die_with_parent\n"
        f"child = subprocess.Popen({SLEEPER!r}, preexec_fn=die_with_parent(os.getpid()))\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(120)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", parent_code], stdout=subprocess.PIPE)
    try:
        child = psutil.Process(int(parent.stdout.readline()))  # type: ignore[union-attr]
        assert child.is_running()
        parent.kill()
        parent.wait(30)
        child.wait(30)  # raises TimeoutExpired if it outlived its parent
    finally:
        if parent.poll() is None:
            parent.kill()


def test_a_later_start_stops_only_servers_whose_owner_is_gone(tmp_path: Path) -> None:
    records = tmp_path / RECORDS_DIR
    gone_owner = subprocess.Popen([sys.executable, "-c", "pass"])
    owner_started = process_start(gone_owner.pid)
    gone_owner.wait(30)
    orphan, kept = subprocess.Popen(SLEEPER), subprocess.Popen(SLEEPER)
    try:
        record_server(records, kept.pid)  # owned by this (live) test process
        record_server(records, orphan.pid)
        orphan_record = records / f"{orphan.pid}.json"
        owned = json.loads(orphan_record.read_text())
        owned |= {"owner_pid": gone_owner.pid, "owner_started": owner_started}
        orphan_record.write_text(json.dumps(owned))
        # a pid now used by another process (start time differs): not ours to kill
        reused = {**owned, "pid": kept.pid, "started": owned["started"] - 1000}
        (records / "99999999.json").write_text(json.dumps(reused))
        (records / "junk.json").write_text("{not json")

        assert reap_stale_servers(records) == [orphan.pid]
        assert orphan.wait(30) is not None
        assert kept.poll() is None
        assert sorted(p.name for p in records.glob("*.json")) == [f"{kept.pid}.json"]
    finally:
        for process in (orphan, kept):
            process.kill()
            process.wait(30)
