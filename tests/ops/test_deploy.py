"""`toucan deploy` finds the Prefect API the way Prefect does: the environment first, then the
active profile (`prefect config set PREFECT_API_URL=...`). Each command runs in its own process
with its own PREFECT_HOME, as an operator's shell would, against a port where nothing listens."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from deployments.definitions import CHECKOUT, find_project_dir, project_environment
from tests.ops.test_server_integration import free_port

ROOT = Path(__file__).resolve().parents[2]


def run(args: list[str], home: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "TOUCAN_"))}
    return subprocess.run(
        [sys.executable, "-m", *args],
        cwd=ROOT,
        env={**clean, "PREFECT_HOME": str(home), "PREFECT_CLIENT_MAX_RETRIES": "0", **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow
def test_deploy_reads_the_api_url_from_the_prefect_profile_and_says_when_there_is_none(
    tmp_path: Path,
) -> None:
    home = tmp_path / "prefect-home"
    unset = run(["cli", "deploy"], home)
    assert unset.returncode == 2 and "no Prefect API URL" in unset.stderr, unset.stderr

    profile_url = f"http://127.0.0.1:{free_port()}/api"
    configured = run(["prefect", "config", "set", f"PREFECT_API_URL={profile_url}"], home)
    assert configured.returncode == 0, configured.stderr
    from_profile = run(["cli", "deploy"], home)
    # an API that does not answer is the system's failure (exit 1, cli/failures.py), not a bad input
    assert from_profile.returncode == 1, from_profile.stderr
    assert f"could not register deployments at {profile_url}" in from_profile.stderr
    assert from_profile.stderr.strip().endswith("[prefect_api_error]")

    env_url = f"http://127.0.0.1:{free_port()}/api"  # the environment wins over the profile
    from_env = run(["cli", "deploy"], home, PREFECT_API_URL=env_url)
    assert f"could not register deployments at {env_url}" in from_env.stderr


def test_deployments_carry_the_project_store_fleet_and_settings_as_absolute_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("TOUCAN_PROJECT_DIR", "TOUCAN_CONFIG", "TOUCAN_STORE", "TOUCAN_MCP__FLEET_DIR"):
        monkeypatch.delenv(name, raising=False)
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    project.mkdir()
    elsewhere.mkdir()
    config = project / "toucan.yaml"
    config.write_text("store: data/s.duckdb\nmcp:\n  fleet_dir: my-fleet\n", encoding="utf-8")

    monkeypatch.chdir(elsewhere)  # an operator starting `toucan server` from another directory
    assert find_project_dir() == CHECKOUT  # no project here: the checkout the code runs from
    assert find_project_dir(Path("../project")) == project
    monkeypatch.setenv("TOUCAN_PROJECT_DIR", str(project))
    assert find_project_dir() == project
    assert project_environment(project) == {
        "TOUCAN_STORE": str(project / "data" / "s.duckdb"),
        "TOUCAN_MCP__FLEET_DIR": str(project / "my-fleet"),
        "TOUCAN_CONFIG": str(config),
    }
    monkeypatch.delenv("TOUCAN_PROJECT_DIR")
    monkeypatch.chdir(project)
    assert find_project_dir() == project  # it holds a toucan.yaml
