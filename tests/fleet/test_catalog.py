"""The fleet catalog and locks are well formed (no install needed)."""

from __future__ import annotations

import json
from pathlib import Path

from mcp_env.fleet.catalog import list_install_units, load_fleet_catalog, read_catalog_file
from mcp_env.specs import HttpSpec, StdioSpec, parse_server_spec
from toucan.config import DOMAIN_CATEGORIES


def test_every_entry_parses_as_a_fleet_spec(tmp_path: Path) -> None:
    specs = [parse_server_spec(raw) for raw in load_fleet_catalog(tmp_path)]

    assert len(specs) >= 15
    assert len({spec.name for spec in specs}) == len(specs)
    for spec in specs:
        assert spec.source == "fleet", spec.name
        assert spec.domain in DOMAIN_CATEGORIES, spec.name
        assert spec.license and spec.homepage and spec.description, spec.name
        assert spec.package and ("==" in spec.package or spec.package.count("@") >= 1), spec.name
        assert spec.probe is not None and spec.probe["tool"] in spec.read_only_tools, spec.name
    assert len({spec.domain for spec in specs}) >= 7


def test_fleet_and_seed_placeholders_are_filled_but_launch_ones_are_not(tmp_path: Path) -> None:
    raw_specs = load_fleet_catalog(tmp_path)
    text = json.dumps(raw_specs)

    assert "{fleet}" not in text and "{seed}" not in text
    assert str(tmp_path.resolve()) in text
    assert "{sandbox}" in text


def test_at_least_one_server_is_reached_over_local_streamable_http(tmp_path: Path) -> None:
    specs = [parse_server_spec(raw) for raw in load_fleet_catalog(tmp_path)]
    http_specs = [spec for spec in specs if isinstance(spec, HttpSpec)]

    assert http_specs
    for spec in http_specs:
        assert spec.url.startswith("http://127.0.0.1:{port}/")
        assert isinstance(spec.launch, StdioSpec)
        assert any("{port}" in arg for arg in spec.launch.args)


def test_servers_that_read_any_path_are_isolated(tmp_path: Path) -> None:
    specs = {raw["name"]: parse_server_spec(raw) for raw in load_fleet_catalog(tmp_path)}

    for name in ("word", "powerpoint", "markitdown", "pdf-tools"):
        spec = specs[name]
        assert isinstance(spec, StdioSpec) and spec.sandbox.isolate, name


def test_every_server_has_a_committed_lock() -> None:
    servers = {server["name"] for server in read_catalog_file()["servers"]}
    units = list_install_units()

    assert {unit.name for unit in units} == servers
    for unit in units:
        lock_text = unit.lock_path.read_text()
        if unit.registry == "pypi":
            pinned = [line for line in lock_text.splitlines() if line and not line.startswith("#")]
            assert all("==" in line for line in pinned if not line.startswith(" ")), unit.name
            assert unit.requirement in lock_text, unit.name
        else:
            package_name = unit.requirement.rpartition("@")[0]
            lock = json.loads(lock_text)
            assert f"node_modules/{package_name}" in lock["packages"], unit.name
