"""Every fleet server, once installed, starts offline-capable and lists tools (raw mcp client).

The fleet is installed into the shared /work/main/.fleet (idempotent: a no-op when up to date),
since a fresh install takes minutes.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from mcp_env.fleet.catalog import load_fleet_catalog
from mcp_env.fleet.check import ServerCheck, check_fleet
from mcp_env.fleet.install import MIN_SERVERS, FleetInstallReport, install_fleet
from mcp_env.specs import parse_server_spec

FLEET_DIR = Path(__file__).resolve().parents[2] / ".fleet"
# a first install builds two native npm modules from source: minutes, not the usual 300 s cap
pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]


@pytest.fixture(scope="module")
def install_report() -> FleetInstallReport:
    return install_fleet(FLEET_DIR, None)


@pytest.fixture(scope="module")
def server_checks(install_report: FleetInstallReport) -> dict[str, ServerCheck]:
    checks = asyncio.run(check_fleet(FLEET_DIR, install_report.installed, concurrency=4))
    return {check.name: check for check in checks}


def test_the_whole_catalog_installs(install_report: FleetInstallReport) -> None:
    assert install_report.seed_ok
    assert not install_report.failed, install_report.results
    assert len(install_report.installed) >= MIN_SERVERS


def test_a_second_install_is_a_no_op(install_report: FleetInstallReport) -> None:
    again = install_fleet(FLEET_DIR, None)

    assert all(result.skipped for result in again.results)
    assert again.seconds < 30


def test_every_installed_server_starts_and_lists_tools(
    server_checks: dict[str, ServerCheck],
) -> None:
    failed = {name: check.error for name, check in server_checks.items() if not check.ok}
    assert not failed


def test_every_probe_call_succeeds(server_checks: dict[str, ServerCheck]) -> None:
    failed = {n: (c.probe_text, c.error) for n, c in server_checks.items() if not c.probe_ok}
    assert not failed


def test_read_only_tools_and_probes_name_real_tools(server_checks: dict[str, ServerCheck]) -> None:
    for raw in load_fleet_catalog(FLEET_DIR):
        spec = parse_server_spec(raw)
        listed = set(server_checks[spec.name].tools)
        assert set(spec.read_only_tools) <= listed, spec.name


def test_fleet_totals(server_checks: dict[str, ServerCheck]) -> None:
    specs = {raw["name"]: raw for raw in load_fleet_catalog(FLEET_DIR)}
    working = [check for check in server_checks.values() if check.ok]
    domains = {specs[check.name]["domain"] for check in working}

    assert len(working) >= MIN_SERVERS
    assert sum(len(check.tools) for check in working) >= 200
    assert len(domains) >= 7


def test_the_http_server_answers_over_streamable_http(
    server_checks: dict[str, ServerCheck],
) -> None:
    http_names = [raw["name"] for raw in load_fleet_catalog(FLEET_DIR) if "url" in raw]

    assert http_names
    for name in http_names:
        assert server_checks[name].ok and server_checks[name].probe_ok, server_checks[name]
