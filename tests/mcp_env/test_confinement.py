"""What a running server can reach: the host's files, toucan's secrets, other sandboxes. Real
servers, real bubblewrap. (The clean-up of killed runs' sandboxes: test_sandbox_dirs.py.)"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from mcp_env.health import check_server
from mcp_env.pool import SessionPool
from mcp_env.session import open_session
from mcp_env.specs import SandboxSpec, StdioSpec
from tasks.onboard import onboard_from_check
from tests.mcp_env.conftest import CONNECT_TIMEOUT_S, PYTHON

ROOT = Path(__file__).resolve().parents[2]
PEEK_SERVER = ROOT / "tests" / "servers" / "peek_server.py"
DRIVER = ROOT / "tests" / "servers" / "session_driver.py"
FAKE_SECRETS = {
    "OPENAI_API_KEY": "sk-test-openai-5f1c2a9e7b",
    "ANTHROPIC_API_KEY": "sk-ant-test-0d4e8c1b3a",
    "AWS_SECRET_ACCESS_KEY": "aws-test-secret-9b7d5f3e1c",
    "DATABASE_PASSWORD": "db-test-password-2a4c6e8f",
}
DRIVER_TIMEOUT_S = 180.0
# what the allow-listed root may hold (the rest is mount points of program, sandbox, /tmp)
VISIBLE_TOP_LEVEL = {"bin", "dev", "etc", "lib", "lib32", "lib64", "libx32", "proc", "sbin"}
VISIBLE_TOP_LEVEL |= {"tmp", "usr"}

pytestmark = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bwrap is not installed")


def peek_spec(python: str = PYTHON, script: Path = PEEK_SERVER, **sandbox) -> StdioSpec:
    return StdioSpec(
        name=f"peek-{uuid.uuid4().hex[:6]}",
        command=python,
        args=[str(script)],
        sandbox=SandboxSpec(**sandbox),
    )


async def peek(session, tool: str, **arguments) -> dict:
    return json.loads((await session.call_tool(tool, arguments)).text)


@pytest.fixture
def home_marker() -> Iterator[Path]:
    """A file in the real home directory of the user running the tests."""
    marker = Path.home() / f".toucan-sandbox-test-{uuid.uuid4().hex}"
    marker.write_text("home secret")
    yield marker
    marker.unlink(missing_ok=True)


@pytest.mark.anyio
@pytest.mark.parametrize("isolate", [False, True], ids=["default", "isolated"])
async def test_a_server_cannot_read_the_home_the_project_or_the_store(
    tmp_path, home_marker, isolate
):
    store = tmp_path / "store" / "toucan.duckdb"
    store.parent.mkdir()
    duckdb.connect(str(store)).close()
    project_file = ROOT / "pyproject.toml"
    seed = tmp_path / "seed"
    seed.mkdir()
    (seed / "note.txt").write_text("seeded")
    spec = peek_spec(isolate=isolate, seed=["note.txt"])
    async with open_session(
        spec, seed_dir=seed, connect_timeout=CONNECT_TIMEOUT_S, isolation="bwrap"
    ) as session:
        denied = {
            path: await peek(session, "read_file", path=str(path))
            for path in (home_marker, project_file, store)
        }
        home_listing = await peek(session, "list_dir", path=str(Path.home()))
        project_listing = await peek(session, "list_dir", path=str(ROOT))
        root_listing = await peek(session, "list_dir", path="/")
        own = await peek(session, "read_file", path="{sandbox}/note.txt")
        wrote = await peek(session, "write_file", path="{sandbox}/out.txt", text="x")
    assert not any(seen["readable"] for seen in denied.values()), denied
    assert home_marker.name not in (home_listing["entries"] or [])
    assert "pyproject.toml" not in (project_listing["entries"] or [])
    assert set(root_listing["entries"]) - VISIBLE_TOP_LEVEL <= {
        Path(p).parts[1] for p in (PYTHON, Path.home(), ROOT)
    }
    assert own == {"readable": True, "text": "seeded"} and wrote["written"] is True


@pytest.mark.anyio
async def test_a_server_cannot_reach_another_servers_sandbox(tmp_path):
    async with (
        open_session(peek_spec(), sandbox_root=tmp_path, isolation="bwrap") as first,
        open_session(peek_spec(), sandbox_root=tmp_path, isolation="bwrap") as second,
    ):
        await peek(first, "write_file", path="{sandbox}/mine.txt", text="first's")
        seen = await peek(second, "read_file", path=f"{first.sandbox_dir}/mine.txt")
        listing = await peek(second, "list_dir", path=str(tmp_path))
    assert seen["readable"] is False
    assert Path(first.sandbox_dir).name not in (listing["entries"] or [])


@pytest.mark.anyio
async def test_a_checkout_under_tmp_starts_its_own_isolated_server(tmp_path):
    """A clone in /tmp used to fail: bwrap put a fresh tmpfs over /tmp and so over the
    clone's own venv ("execvp .../.venv/bin/python: No such file or directory")."""
    checkout = tmp_path / "clone"
    (checkout / "tests" / "servers").mkdir(parents=True)
    script = checkout / "tests" / "servers" / "peek_server.py"
    shutil.copy(PEEK_SERVER, script)
    (checkout / ".env").write_text("OPENAI_API_KEY=sk-from-dotenv")
    venv = checkout / ".venv"
    subprocess.run([PYTHON, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    spec = peek_spec(python=str(venv / "bin" / "python"), script=script, isolate=True)
    async with open_session(
        spec, sandbox_root=checkout / "sandboxes", isolation="bwrap"
    ) as session:
        tools = [tool.name for tool in await session.list_tools()]
        dotenv = await peek(session, "read_file", path=str(checkout / ".env"))
        prefix = await peek(session, "environ")
    assert "read_file" in tools and dotenv["readable"] is False
    assert prefix["HOME"].startswith(str(checkout / "sandboxes"))


@pytest.mark.anyio
async def test_onboarding_records_how_the_server_was_confined():
    spec = peek_spec()
    async with SessionPool() as pool:
        check = await check_server(spec, pool)
    server = onboard_from_check(spec, check, ["File Management"]).server
    assert check.status == "ok" and server.sandbox == "bwrap"


def run_driver(spec: StdioSpec, mode: str, root: Path, *extra: str) -> list[dict]:
    """Run a session from a process whose start-time environment holds the fake secrets."""
    env = {**os.environ, **FAKE_SECRETS}
    argv = [PYTHON, str(DRIVER), spec.model_dump_json(), mode, str(root), *extra]
    done = subprocess.run(
        argv, env=env, capture_output=True, text=True, timeout=DRIVER_TIMEOUT_S, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return [json.loads(line) for line in done.stdout.splitlines()]


@pytest.mark.parametrize(
    ("mode", "blank"), [("bwrap", False), ("helper", True)], ids=["bwrap", "helper"]
)
def test_a_server_that_is_not_isolated_reads_no_secret_of_its_parent(tmp_path, mode, blank):
    """bwrap: the parent is outside the server's PID namespace, whatever its environment.
    helper: the parent is `sh` with the server's clean environment, and toucan's own
    start-time environment is blanked (`--blank`, as the command does)."""
    flags = ["--blank"] if blank else []
    seen = run_driver(peek_spec(), mode, tmp_path, *flags, "environ", "proc_environ")
    report = json.dumps(seen)
    proc = seen[1]["result"]
    assert proc["parent"] is not None  # it did read /proc/<ppid>/environ
    assert not [name for name, value in FAKE_SECRETS.items() if value in report]
    if mode == "bwrap":
        assert set(proc["processes"]) <= {"1", str(proc["pid"])}  # nothing of ours in view
