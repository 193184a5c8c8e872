"""End to end through a real Prefect server: `toucan server` starts it (SQLite) with a worker
and registers the deployments; the test triggers a `pipeline` run through the REST API with
parameters, the worker runs it, and the run's per-server artifact is read back over the API.
Ctrl-C (SIGINT) then stops server and worker, leaving no process behind."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "tests" / "servers" / "tiny_server.py"
START_TIMEOUT_S = 600.0  # a cold server migrates its SQLite database first; slow on a loaded host
RUN_TIMEOUT_S = 240.0
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@contextlib.contextmanager
def toucan_server(
    tmp_path: Path, *args: str, cwd: Path | None = None
) -> Iterator[tuple[str, subprocess.Popen[bytes], Path]]:
    """`toucan server` (SQLite under tmp_path, a worker polling every second) started in `cwd`
    (default tmp_path) with `args`; yields (API URL, process, log file) once the worker polls,
    and stops it with Ctrl-C (SIGINT) after, killing what is left."""
    port = free_port()
    log = tmp_path / "server.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TOUCAN_", "PREFECT_"))}
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cli", "server", "--port", str(port), "--no-ui",
             "--home", str(tmp_path / "prefect-home"), "--poll-seconds", "1", *args],
            cwd=cwd or tmp_path, env=env, stdout=sink,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        wait_for(
            lambda: "worker polling" in log.read_text() or proc.poll() is not None,
            START_TIMEOUT_S,
            "toucan server to start",
        )
        assert proc.poll() is None, log.read_text()[-3000:]
        yield f"http://127.0.0.1:{port}/api", proc, log
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                for child in psutil.Process(proc.pid).children(recursive=True):
                    child.kill()
                proc.kill()
                proc.wait(10)


@pytest.fixture
def local_prefect(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes], Path]]:
    with toucan_server(tmp_path) as started:
        yield started


def write_catalog(tmp_path: Path) -> Path:
    catalog = {
        "servers": [
            {"name": name, "command": sys.executable, "args": [str(TINY)]}
            for name in ("tiny-a", "tiny-b")
        ]
    }
    path = tmp_path / "catalog.yaml"
    path.write_text(yaml.safe_dump(catalog))
    return path


@pytest.mark.timeout(900)
@pytest.mark.slow
def test_a_pipeline_run_triggered_through_the_api_publishes_its_per_server_artifact(
    local_prefect: tuple[str, subprocess.Popen[bytes], Path], tmp_path: Path
) -> None:
    api, server_proc, log = local_prefect
    children = psutil.Process(server_proc.pid).children(recursive=True)
    said = log.read_text()
    assert "a worker for pool 'toucan' starts next" in said and "start a worker" not in said
    with httpx.Client(base_url=api, timeout=30) as client:
        deployment = client.get("/deployments/name/pipeline/pipeline").json()
        assert deployment["work_pool_name"] == "toucan"
        assert "stages" in deployment["parameter_openapi_schema"]["properties"]
        names = {d["name"] for d in client.post("/deployments/filter", json={}).json()}
        assert {"pipeline", "onboard"} <= names

        parameters = {
            "stages": ["onboard"],
            "store": str(tmp_path / "store.duckdb"),
            "stage_params": {
                "onboard": {"catalogs": [str(write_catalog(tmp_path))], "specs_only": True}
            },
        }
        flow_run = client.post(
            f"/deployments/{deployment['id']}/create_flow_run", json={"parameters": parameters}
        ).json()

        def finished() -> dict[str, Any] | None:
            run = client.get(f"/flow_runs/{flow_run['id']}").json()
            return run if run["state_type"] in TERMINAL else None

        run = wait_for(finished, RUN_TIMEOUT_S, "the pipeline run to finish")
        assert run["state_type"] == "COMPLETED", log.read_text()[-4000:]
        artifacts = client.post(
            "/artifacts/filter",
            json={"artifacts": {"flow_run_id": {"any_": [flow_run["id"]]}}},
        ).json()
    by_key = {a["key"]: a for a in artifacts}
    rows = json.loads(by_key["pipeline-servers"]["data"])
    assert {r["server"] for r in rows} == {"tiny-a", "tiny-b"}
    assert all(r["stage"] == "onboard" and r["items_done"] == 1 for r in rows)
    (stage_row,) = json.loads(by_key["pipeline-stages"]["data"])
    assert (stage_row["stage"], stage_row["outcome"], stage_row["reason"]) == (
        "onboard",
        "ran",
        "never_ran",
    )
    assert (stage_row["planned"], stage_row["done"], stage_row["failed"]) == (2, 2, 0)
    assert stage_row["wall_s"] > 0 and stage_row["status"] == "completed"

    server_proc.send_signal(signal.SIGINT)
    assert server_proc.wait(90) == 0
    wait_for(lambda: not any(c.is_running() for c in children), 30, "children to exit")
