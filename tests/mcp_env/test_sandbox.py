"""Sandbox: placeholders, seeds, allow-listed environment, how a launch is confined."""

from __future__ import annotations

import json
import logging
import shutil
import socket
from pathlib import Path

import pytest

from mcp_env.confine import bwrap_problem, detect_isolation, network_cut_problem
from mcp_env.sandbox import prepare_launch, remove_sandbox
from mcp_env.session import open_session
from mcp_env.specs import SandboxSpec, StdioSpec
from tests.mcp_env.conftest import CONNECT_TIMEOUT_S, PYTHON, tiny_spec
from toucan.errors import ServerStartError

needs_bwrap = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bwrap is not installed")


@pytest.fixture
def fresh_probes():
    """The mode probes are cached per process; these tests change what they would find."""
    for probe in (detect_isolation, network_cut_problem):
        probe.cache_clear()
    yield
    for probe in (detect_isolation, network_cut_problem):
        probe.cache_clear()


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
        spec,
        sandbox_root=tmp_path / "boxes",
        seed_dir=seed_dir,
        fleet_dir=tmp_path / "fleet",
        isolation="helper",
    )
    sandbox = Path(launch.sandbox_dir)
    try:
        assert sandbox.parent == (tmp_path / "boxes").resolve()
        assert (sandbox / "repo" / "README").read_text() == "seeded"
        assert launch.argv[-4] == f"{sandbox}/data.db"
        assert launch.argv[-2] == str(launch.port)
        assert launch.argv[-1] == '{"json": "{kept}"}'
        assert launch.env["FLEET_HOME"] == f"{tmp_path / 'fleet'}/x"
        assert launch.env["SEED_DIR"] == str(seed_dir)
        assert launch.env["HOME"].startswith(str(sandbox))
        assert launch.env["TMPDIR"].startswith(str(sandbox))
        assert launch.env["FASTMCP_CHECK_FOR_UPDATES"] == "off"
        assert launch.sandbox_mode == "helper"
    finally:
        remove_sandbox(sandbox)


def test_missing_seed_is_refused_and_leaves_no_dir(tmp_path):
    spec = StdioSpec(name="s", command=PYTHON, sandbox=SandboxSpec(seed=["absent"]))
    with pytest.raises(ServerStartError) as caught:
        prepare_launch(spec, sandbox_root=tmp_path, seed_dir=tmp_path, fleet_dir=None)
    assert caught.value.reason == "missing_seed"
    assert not list(tmp_path.glob("mcp-sbx-*"))


def test_a_named_sandbox_path_that_does_not_exist_is_refused(tmp_path):
    spec = StdioSpec(
        name="s", command=PYTHON, sandbox=SandboxSpec(read_only_paths=[str(tmp_path / "nope")])
    )
    for mode in ("bwrap", "helper"):
        with pytest.raises(ServerStartError) as caught:
            prepare_launch(
                spec, sandbox_root=tmp_path, seed_dir=None, fleet_dir=None, isolation=mode
            )
        assert caught.value.reason == "sandbox_path_missing"
    assert not list(tmp_path.glob("mcp-sbx-*"))


def test_a_working_dir_that_does_not_exist_is_refused_by_name(tmp_path):
    spec = StdioSpec(name="s", command=PYTHON, cwd="{sandbox}/absent")
    with pytest.raises(ServerStartError) as caught:
        prepare_launch(spec, sandbox_root=tmp_path, seed_dir=None, fleet_dir=None)
    assert caught.value.reason == "cwd_not_found"
    assert not list(tmp_path.glob("mcp-sbx-*"))


def test_network_follows_isolation_unless_the_spec_says_otherwise():
    assert SandboxSpec().has_network and not SandboxSpec(isolate=True).has_network
    assert SandboxSpec(isolate=True, network=True).has_network
    assert not SandboxSpec(network=False).has_network


@needs_bwrap
def test_files_named_on_the_command_line_are_readable_only_when_not_isolated(tmp_path):
    config = tmp_path / "server.json"
    config.write_text("{}")
    binds = {}
    for isolate in (False, True):
        spec = tiny_spec(sandbox=SandboxSpec(isolate=isolate))
        spec = spec.model_copy(update={"args": [*spec.args, "--config", str(config)]})
        launch = prepare_launch(
            spec, sandbox_root=tmp_path, seed_dir=None, fleet_dir=None, isolation="bwrap"
        )
        remove_sandbox(launch.sandbox_dir)
        binds[isolate] = launch.argv[: launch.argv.index("--")]
    assert str(config) in binds[False] and str(config) not in binds[True]
    assert str(tmp_path) not in binds[False]  # the file, not its directory


@needs_bwrap
def test_a_bwrap_launch_binds_only_the_program_and_its_sandbox(tmp_path):
    spec = tiny_spec(sandbox=SandboxSpec(isolate=True))
    launch = prepare_launch(
        spec, sandbox_root=tmp_path, seed_dir=None, fleet_dir=None, isolation="bwrap"
    )
    try:
        argv = launch.argv
        bound = {argv[i + 1]: argv[i] for i, arg in enumerate(argv) if arg.endswith("bind")}
        assert "--unshare-all" in argv and "--share-net" not in argv  # isolated: no network
        assert argv[argv.index("--") + 1 :] == [spec.command, *spec.args]
        assert bound[launch.sandbox_dir] == "--bind"
        assert bound[str(Path(PYTHON).parents[1].resolve())] == "--ro-bind"  # the venv
        assert bound[spec.args[0]] == "--ro-bind"  # the server script, not its directory
        assert "/" not in bound and str(Path.home()) not in bound
        assert "/etc/resolv.conf" not in argv  # name resolution only with network
    finally:
        remove_sandbox(launch.sandbox_dir)


def test_the_helper_is_the_servers_parent_and_cuts_the_network_when_asked(tmp_path):
    plain = prepare_launch(
        tiny_spec(), sandbox_root=tmp_path, seed_dir=None, fleet_dir=None, isolation="helper"
    )
    offline = prepare_launch(
        tiny_spec(sandbox=SandboxSpec(isolate=True)),
        sandbox_root=tmp_path,
        seed_dir=None,
        fleet_dir=None,
        isolation="helper",
    )
    try:
        assert Path(plain.argv[0]).name == "sh" and plain.argv[3] == "toucan-mcp-helper"
        assert "unshare" not in " ".join(plain.argv)
        if network_cut_problem() is None:
            assert "-n" in offline.argv[offline.argv.index(shutil.which("unshare")) :]
    finally:
        remove_sandbox(plain.sandbox_dir)
        remove_sandbox(offline.sandbox_dir)


def test_without_bwrap_the_helper_is_chosen_and_the_weaker_mode_logged_once(
    fresh_probes, monkeypatch, caplog
):
    monkeypatch.setenv("PATH", "/nonexistent")
    caplog.set_level(logging.WARNING, logger="mcp_env.confine")
    assert bwrap_problem() == "bwrap is not installed"
    assert detect_isolation() == "helper"
    assert detect_isolation() == "helper"
    assert len([r for r in caplog.records if "weaker" in r.getMessage()]) == 1


def test_an_offline_spec_is_refused_when_nothing_can_cut_the_network(fresh_probes, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    spec = StdioSpec(name="s", command=PYTHON, sandbox=SandboxSpec(isolate=True))
    with pytest.raises(ServerStartError) as caught:
        prepare_launch(spec, sandbox_root=None, seed_dir=None, fleet_dir=None, isolation="helper")
    assert caught.value.reason == "sandbox_unavailable"


async def whoami(session, variable: str, path: str = "") -> dict:
    result = await session.call_tool("whoami", {"variable": variable, "path": path})
    return json.loads(result.text)


@pytest.mark.anyio
@pytest.mark.parametrize("mode", ["bwrap", "helper"])
async def test_child_sees_only_the_allow_listed_environment(tmp_path, monkeypatch, mode):
    if mode == "bwrap" and shutil.which("bwrap") is None:
        pytest.skip("bwrap is not installed")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-parent-secret")
    seed_dir = tmp_path / "seed"
    seed_dir.mkdir()
    (seed_dir / "note.txt").write_text("seeded")
    spec = tiny_spec(env={"GREETING": "hello"}, sandbox=SandboxSpec(seed=["note.txt"]))
    boxes = tmp_path / "boxes"
    async with open_session(
        spec,
        sandbox_root=boxes,
        seed_dir=seed_dir,
        connect_timeout=CONNECT_TIMEOUT_S,
        isolation=mode,
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
    assert [path.name for path in sandbox_dirs if path.suffix != ".etc"] == [Path(home["cwd"]).name]
    assert not list(boxes.glob("mcp-sbx-*"))  # removed on exit, with their .etc siblings


@pytest.mark.anyio
@needs_bwrap
async def test_bwrap_hides_host_files_and_cuts_the_network_of_isolated_servers(tmp_path):
    host_file = tmp_path / "host-secret.txt"  # under /tmp, outside the sandbox
    host_file.write_text("secret")
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        results = {}
        for isolate in (False, True):
            spec = tiny_spec(sandbox=SandboxSpec(isolate=isolate))
            async with open_session(
                spec, connect_timeout=CONNECT_TIMEOUT_S, isolation="bwrap"
            ) as session:
                seen = await whoami(session, "HOME", str(host_file))
                network = await session.call_tool("can_connect", {"port": port})
                results[isolate] = (seen["readable"], network.text)
    assert results[False] == (False, "connected")
    assert results[True][0] is False
    assert results[True][1].startswith("refused")
