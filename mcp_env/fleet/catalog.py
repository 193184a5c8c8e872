"""Read the bundled fleet catalog (fleet.yaml): server specs and how to install each one."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

from mcp_env.sandbox import substitute_vars
from mcp_env.specs import parse_server_spec
from toucan.errors import CatalogError

FLEET_PACKAGE_DIR = Path(__file__).resolve().parent
CATALOG_PATH = FLEET_PACKAGE_DIR / "fleet.yaml"
LOCKS_DIR = FLEET_PACKAGE_DIR / "locks"
DEFAULT_PYTHON = "3.12"


class InstallUnit(BaseModel):
    """One venv (PyPI) or npm prefix (npm) holding one server."""

    model_config = ConfigDict(extra="forbid")

    name: str
    registry: Literal["pypi", "npm"]
    requirement: str  # "mcp-server-time==2026.10.19" or "@scope/pkg@1.2.3"
    python: str = DEFAULT_PYTHON
    extra: list[str] = Field(default_factory=list)  # extra pins, PyPI only (e.g. mcp==1.30.0)

    @property
    def lock_path(self) -> Path:
        if self.registry == "pypi":
            return LOCKS_DIR / f"{self.name}.txt"
        return LOCKS_DIR / self.name / "package-lock.json"


def read_catalog_file(path: Path = CATALOG_PATH) -> dict[str, Any]:
    """The raw YAML document: {"installs": {...}, "servers": [...]}."""
    try:
        document = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise CatalogError(f"cannot read fleet catalog {path}: {exc}") from exc
    if not isinstance(document, dict) or not isinstance(document.get("servers"), list):
        raise CatalogError(f"fleet catalog {path} has no 'servers' list")
    return document


def split_package(package: str) -> tuple[Literal["pypi", "npm"], str]:
    """'pypi:name==1.0' -> ('pypi', 'name==1.0'); 'npm:@a/b@1.0' -> ('npm', '@a/b@1.0')."""
    registry, _, requirement = package.partition(":")
    if registry not in ("pypi", "npm") or not requirement:
        raise CatalogError(
            f"package must look like 'pypi:name==ver' or 'npm:name@ver': {package!r}"
        )
    return registry, requirement  # type: ignore[return-value]


def list_install_units(path: Path = CATALOG_PATH) -> list[InstallUnit]:
    """One install unit per server, in catalog order."""
    document = read_catalog_file(path)
    installs = document.get("installs") or {}
    units = []
    for server in document["servers"]:
        registry, requirement = split_package(server["package"])
        options = installs.get(server["name"]) or {}
        units.append(
            InstallUnit(name=server["name"], registry=registry, requirement=requirement, **options)
        )
    return units


def load_fleet_catalog(fleet_dir: Path, path: Path = CATALOG_PATH) -> list[dict[str, Any]]:
    """Server spec dicts with {fleet} and {seed} filled; each one passes parse_server_spec."""
    fleet_dir = Path(fleet_dir).resolve()
    fills = {"fleet": str(fleet_dir), "seed": str(fleet_dir / "seed")}
    specs = [substitute_vars(server, fills) for server in read_catalog_file(path)["servers"]]
    for spec in specs:
        parse_server_spec(spec)
    return specs
