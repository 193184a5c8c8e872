"""`toucan config`: show the settings in force, so users see what a run will use and why."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from typing import Annotated, Any

import typer

from cli.app import ConfigOpt, ProfileOpt, StoreOpt, app, print_json
from cli.preflight import check_stage_names
from toucan.config import load_settings_with_sources
from toucan.settings_layers import source_of

LIST_INDEX = re.compile(r"\[\d+\]")
SOURCE_COLUMN = 64  # where the `# layer` comments line up, unless the value is longer


@app.command("config")
def show_config(
    config: ConfigOpt = None,
    profile: ProfileOpt = None,
    store: StoreOpt = None,
    sources: Annotated[
        bool,
        typer.Option(
            "--sources",
            help="One line per value with the layer that set it: default < profile < file "
            "< env < flag.",
        ),
    ] = False,
) -> None:
    """Print the merged settings (default < profile < user file < environment < flags) as
    JSON, or with --sources where each value came from."""
    flags = {"store": str(store)} if store else None
    settings, set_by = load_settings_with_sources(config, profile=profile, overrides=flags)
    check_stage_names(settings)
    dumped = settings.model_dump(mode="json")
    if not sources:
        print_json(dumped)
        return
    sys.stdout.write("".join(source_lines(dumped, set_by)))


def source_lines(dumped: dict[str, Any], set_by: dict[str, str]) -> list[str]:
    """`key = value  # layer` per value, in the settings' order; a list of mappings (model
    deployments) one line per field as `key[i].field`, each from the layer that set the list."""
    rows = [
        (key, json.dumps(value), source_of(LIST_INDEX.sub("", key), set_by))
        for key, value in display_leaves(dumped)
    ]
    width = min(SOURCE_COLUMN, max(len(f"{key} = {value}") for key, value, _ in rows))
    return [f"{f'{key} = {value}':<{width}}  # {source}\n" for key, value, source in rows]


def display_leaves(value: Any, key: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict) and value:
        for name, inner in value.items():
            yield from display_leaves(inner, f"{key}.{name}" if key else name)
    elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        for index, inner in enumerate(value):
            yield from display_leaves(inner, f"{key}[{index}]")
    else:
        yield key, value
