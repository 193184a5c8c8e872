"""The layers settings are built from, lowest first, and which layer set each value.

    default < profile < user file < environment < flags

`default` is toucan/defaults.yaml (and the pydantic field defaults under it), `profile` the
chosen entry of its `profiles:` section, the user file `--config` / TOUCAN_CONFIG /
./toucan.yaml, the environment TOUCAN_<SECTION>__<FIELD> variables, flags what a command
passes itself. A later layer replaces a value of an earlier one; mappings merge key by key,
lists are replaced whole. The user's own file therefore wins over the profile's defaults.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic_settings import BaseSettings, EnvSettingsSource

DEFAULT_SOURCE = "default"


@dataclass(frozen=True)
class Layer:
    """One layer: its label (shown by `toucan config --sources`) and the values it sets, as a
    nested mapping like the YAML's. `names` labels single keys more precisely (the environment
    variable that set them), by dotted key."""

    label: str
    values: Mapping[str, Any]
    names: Mapping[str, str] = field(default_factory=dict)


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """`override` over `base`: mappings merge key by key, anything else replaces."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def leaf_keys(values: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, value) of every value that is not a non-empty mapping."""
    for key, value in values.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            yield from leaf_keys(value, f"{dotted}.")
        else:
            yield dotted, value


def merge_layers(layers: Sequence[Layer]) -> tuple[dict[str, Any], dict[str, str]]:
    """The merged values and, per dotted leaf key, the label of the layer that set it last."""
    merged: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for layer in layers:
        merged = deep_merge(merged, layer.values)
        for key, _ in leaf_keys(layer.values):
            # a leaf replacing a whole mapping hides what earlier layers set beneath it
            for shadowed in [k for k in sources if k.startswith(f"{key}.")]:
                del sources[shadowed]
            sources[key] = layer.names.get(key, layer.label)
    return merged, sources


def source_of(key: str, sources: Mapping[str, str]) -> str:
    """Which layer set `key`: its own entry, else its nearest enclosing key's (a list element,
    a value inside a mapping given whole), else a field default of the settings classes."""
    parts = key.split(".")
    for end in range(len(parts), 0, -1):
        found = sources.get(".".join(parts[:end]))
        if found is not None:
            return found
    return DEFAULT_SOURCE


def env_layer(settings_cls: type[BaseSettings]) -> Layer:
    """The TOUCAN_* variables of the environment as a layer (parsed by pydantic-settings:
    `__` nests, complex fields take JSON); each key is labelled with the variable that set it."""
    values = EnvSettingsSource(settings_cls)()
    prefix = settings_cls.model_config.get("env_prefix", "")
    delimiter = settings_cls.model_config.get("env_nested_delimiter") or "__"
    present = {name.upper(): name for name in os.environ}
    names: dict[str, str] = {}
    for key, _ in leaf_keys(values):
        parts = key.split(".")
        for end in range(len(parts), 0, -1):  # TOUCAN_MCP='{"x": 1}' sets mcp.x
            variable = (prefix + delimiter.join(parts[:end])).upper()
            if variable in present:
                names[key] = f"env {present[variable]}"
                break
    return Layer("env", values, names)
