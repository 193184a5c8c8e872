"""The sandbox view: which host paths a program needs, found from a layout on disk."""

from __future__ import annotations

import os
from pathlib import Path

from mcp_env.sandbox_view import View, list_links, program_paths


def make_base_python(root: Path) -> Path:
    """A pyenv-like prefix: bin/python3.12 with lib/ beside it."""
    (root / "bin").mkdir(parents=True)
    (root / "lib" / "python3.12").mkdir(parents=True)
    python = root / "bin" / "python3.12"
    python.write_text("")
    python.chmod(0o755)
    return python


def make_venv(venv: Path, base_python: Path) -> Path:
    (venv / "bin").mkdir(parents=True)
    (venv / "pyvenv.cfg").write_text(f"home = {base_python.parent}\nversion = 3.12\n")
    (venv / "bin" / "python").symlink_to(base_python)
    script = venv / "bin" / "server"
    script.write_text(f"#!{venv}/bin/python\nimport server\n")
    script.chmod(0o755)
    return script


def bound(view: View) -> set[str]:
    args = view.bwrap_args()
    return {args[i + 1] for i, arg in enumerate(args) if arg == "--ro-bind"}


def test_a_venv_script_through_a_linked_dir_brings_its_venv_and_base_python(tmp_path):
    base = make_base_python(tmp_path / "pyenv" / "3.12")
    make_venv(tmp_path / "real-fleet" / "venvs" / "git", base)
    (tmp_path / "fleet").symlink_to(tmp_path / "real-fleet")  # like a checkout's .fleet
    command = tmp_path / "fleet" / "venvs" / "git" / "bin" / "server"
    view = View()
    for path in program_paths([str(command)], os.defpath):
        view.add(path)
    assert bound(view) == {
        str(tmp_path / "real-fleet" / "venvs" / "git"),
        str(base.parent),
        str(base.parents[1] / "lib"),
    }
    assert view.symlinks[str(tmp_path / "fleet")] == str(tmp_path / "real-fleet")
    assert str(tmp_path / "pyenv") not in bound(view)  # only this version's prefix


def test_an_npm_bin_link_brings_its_node_modules_and_the_node_on_path(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))  # `npm install` in the home dir
    node = make_base_python(tmp_path / "nvm" / "v20").with_name("node")
    node.write_text("")
    node.chmod(0o755)
    package = tmp_path / "node_modules" / "srv" / "dist"
    package.mkdir(parents=True)
    (package / "index.js").write_text("#!/usr/bin/env node\n")
    link = tmp_path / "node_modules" / ".bin" / "srv"
    link.parent.mkdir()
    link.symlink_to("../srv/dist/index.js")
    paths = program_paths([str(link)], str(node.parent))
    assert tmp_path / "node_modules" in paths and tmp_path not in paths  # never all of ~
    assert node.parent in paths and node.parents[1] / "lib" in paths


def test_an_interpreters_script_is_bound_alone_and_options_are_not_scripts(tmp_path):
    script = tmp_path / "project" / "server.py"
    script.parent.mkdir()
    script.write_text("")
    (tmp_path / "project" / ".env").write_text("KEY=1")
    python = make_base_python(tmp_path / "py")
    with_script = program_paths([str(python), "-u", str(script)], os.defpath)
    as_module = program_paths([str(python), "-m", "server", str(script)], os.defpath)
    assert script in with_script and script.parent not in with_script
    assert script not in as_module


def test_links_are_listed_in_the_order_they_are_met(tmp_path):
    (tmp_path / "real" / "bin").mkdir(parents=True)
    (tmp_path / "real" / "bin" / "tool").write_text("")
    (tmp_path / "alias").symlink_to("real")
    (tmp_path / "real" / "bin" / "link").symlink_to("tool")
    links = list_links(tmp_path / "alias" / "bin" / "link")
    assert links == [(tmp_path / "alias", "real"), (tmp_path / "real" / "bin" / "link", "tool")]
