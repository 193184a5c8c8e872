"""Sandbox: placeholders, seeds, allow-listed environment, bubblewrap isolation."""

from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path

import pytest

from mcp_env.sandbox import prepare_launch, remove_sandbox, wrap_isolated
from mcp_env.session import open_session
from mcp_env.specs import SandboxSpec, StdioSpec
from tests.mcp_env.conftest import CONNECT_TIMEOUT_S, PYTHON, tiny_spec
from toucan.errors import ServerStartError


def test_prepare_launch_fills_placeholders_and_copies_seed(tmp_path):
    seed_dir = tmp_path / "seed"
    (seed_dir / "repo").mkdir(parents=True)
    (seed_dir / "repo" / "README").write_text("seeded")
    (seed_dir / "data.db").write_text("db")
    spec = StdioSpec(
        name="seeded",
        command=PYTHON,
        args=["--db", "{sandbox}/data.db", "--port", "{port}", '{"json": "{kept}"}'],
        env={"FLEET_HOME": "{fleet}/x", "SEED_DIR": "{seed}"},
        sandbox=SandboxSpec(seed=["repo", "data.db"]),
    )
    launch = prepare_launch(
        spec, sandbox_root=tmp_path / "boxes", seed_dir=seed_dir, fleet_dir=tmp_path / "fleet"
    )
    sandbox = Path(launch.sandbox_dir)
    try:
        assert sandbox.parent == (tmp_path / "boxes").resolve()
        assert (sandbox / "repo" / "README").read_text() == "seeded"
        assert launch.argv[2] == f"{sandbox}/data.db"
        assert launch.argv[4] == str(launch.port)
        assert launch.argv[5] == '{"json": "{kept}"}'
        assert launch.env["FLEET_HOME"] == f"{tmp_path / 'fleet'}/x"
        assert launch.env["SEED_DIR"] == str(seed_dir)
        assert launch.env["HOME"].startswith(str(sandbox))
        assert launch.env["TMPDIR"].startswith(str(sandbox))
        assert launch.env["FASTMCP_CHECK_FOR_UPDATES"] == "off"
    finally:
        remove_sandbox(sandbox)


def test_missing_seed_is_refused_and_leaves_no_dir(tmp_path):
    spec = StdioSpec(name="s", command=PYTHON, sandbox=SandboxSpec(seed=["absent"]))
    with pytest.raises(ServerStartError) as caught:
        prepare_launch(spec, sandbox_root=tmp_path, seed_dir=tmp_path, fleet_dir=None)
    assert caught.value.reason == "missing_seed"
    assert not list(tmp_path.glob("mcp-sbx-*"))


def test_unshare_is_the_fallback_without_bwrap(tmp_path):
    wrapped = wrap_isolated(
        ["server", "--flag"], tmp_path, None, network=False, isolation="unshare"
    )
    assert wrapped == ["unshare", "-n", "--", "server", "--flag"]
    bwrapped = wrap_isolated(
        ["server"], tmp_path, Path("/tmp/fleet"), network=False, isolation="bwrap"
    )
    assert "--unshare-net" in bwrapped and bwrapped[-2:] == ["--", "server"]
    assert bwrapped[bwrapped.index("/tmp/fleet") - 1] == "--ro-bind"  # fleet under /tmp bound back


def test_isolation_unavailable_is_refused(tmp_path):
    with pytest.raises(ServerStartError) as caught:
        wrap_isolated(["server"], tmp_path, None, network=False, isolation=None)
    assert caught.value.reason == "sandbox_unavailable"


async def whoami(session, variable: str, path: str = "") -> dict:
    result = await session.call_tool("whoami", {"variable": variable, "path": path})
    return json.loads(result.text)


@pytest.mark.anyio
async def test_child_sees_only_the_allow_listed_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-parent-secret")
    seed_dir = tmp_path / "seed"
    seed_dir.mkdir()
    (seed_dir / "note.txt").write_text("seeded")
    spec = tiny_spec(env={"GREETING": "hello"}, sandbox=SandboxSpec(seed=["note.txt"]))
    boxes = tmp_path / "boxes"
    async with open_session(
        spec, sandbox_root=boxes, seed_dir=seed_dir, connect_timeout=CONNECT_TIMEOUT_S
    ) as s:
        seeded = await whoami(s, "HOME", "{sandbox}/note.txt")  # placeholder filled per session
        secret = await whoami(s, "OPENAI_API_KEY")
        greeting = await whoami(s, "GREETING")
        home = await whoami(s, "HOME")
        sandbox_dirs = [path for path in boxes.glob("mcp-sbx-*") if path.is_dir()]
    assert seeded["readable"] is True
    assert secret["value"] is None
    assert greeting["value"] == "hello"
    assert home["value"].startswith(str(boxes.resolve()))
    assert len(sandbox_dirs) == 1 and home["cwd"] == str(sandbox_dirs[0])
    assert not list(boxes.glob("mcp-sbx-*"))  # removed on exit


@pytest.mark.anyio
@pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed")
async def test_bwrap_hides_host_files_and_network(tmp_path):
    host_file = tmp_path / "host-secret.txt"  # under /tmp, outside the sandbox
    host_file.write_text("secret")
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        results = {}
        for isolate in (False, True):
            spec = tiny_spec(sandbox=SandboxSpec(isolate=isolate))
            async with open_session(spec, connect_timeout=CONNECT_TIMEOUT_S) as session:
                seen = await whoami(session, "HOME", str(host_file))
                network = await session.call_tool("can_connect", {"port": port})
                results[isolate] = (seen["readable"], network.text)
    assert results[False] == (True, "connected")
    assert results[True][0] is False
    assert results[True][1].startswith("refused")
