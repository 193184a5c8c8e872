"""Imports point down: cli -> flows -> tasks -> mcp_env / toucan. The core (toucan/, mcp_env/)
knows nothing of orchestration: no Prefect, no flows/, no cli/, no import by string."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CORE = ("toucan", "mcp_env")
UPPER = ("prefect", "prefect_dask", "prefect_ray", "flows", "cli", "deployments")


def imported_modules(path: Path) -> Iterator[tuple[int, str]]:
    """(line, module) of every import in a file, top-level or inside a function."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "import_module":
            yield node.lineno, "<import by string>"


def core_files() -> list[Path]:
    return [
        path
        for package in CORE
        for path in sorted((ROOT / package).rglob("*.py"))
        if ".fleet" not in path.parts and "node_modules" not in path.parts
    ]


def test_the_core_imports_neither_prefect_nor_flows_nor_the_cli() -> None:
    files = core_files()
    assert len(files) > 40  # the scan sees the packages it guards
    upward = [
        f"{path.relative_to(ROOT)}:{line} imports {module}"
        for path in files
        for line, module in imported_modules(path)
        if module == "<import by string>" or module.split(".")[0] in UPPER
    ]
    assert upward == []


def test_units_of_work_import_no_orchestration() -> None:
    """tasks/ holds plain functions: the runner (flows/) makes Prefect tasks of them."""
    upward = [
        f"{path.relative_to(ROOT)}:{line} imports {module}"
        for path in sorted((ROOT / "tasks").rglob("*.py"))
        for line, module in imported_modules(path)
        if module.split(".")[0] in UPPER
    ]
    assert upward == []
