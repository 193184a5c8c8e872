"""What every flow parameter means, written once: each flow's docstring gets an `Args:` section
from here (`documented`), which Prefect parses into the help text of the parameter's
field in the deployment form. A flow parameter without a description fails at import.

A parameter shared by several flows means the same in each (`SHARED`); one that means something
of its own in a flow is described under that flow's name (`OWN`), which wins.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import TypeVar

F = TypeVar("F", bound=Callable[..., object])

SHARED: dict[str, str] = {
    "store": (
        "DuckDB store file. Default: the settings' `store` (env TOUCAN_STORE, else "
        "data/toucan.duckdb under the project directory the deployment names)."
    ),
    "config": "YAML settings file (default: env TOUCAN_CONFIG, else toucan.yaml if present).",
    "profile": (
        "Settings profile: `local` (embedded model, offline) or `cloud` (provider APIs). "
        "Default: env TOUCAN_PROFILE, else cloud when a provider key is set, else local."
    ),
    "limit": "Do at most this many new items in this run (default: all that are left).",
    "seed": "Seed of the run's random choices; the same seed gives the same item ids.",
    "teachers": "Teacher deployments to run, by name (default: every configured teacher).",
}

OWN: dict[str, dict[str, str]] = {
    "onboard": {
        "catalogs": (
            "Catalog files (our YAML, JSON or Smithery JSONL), paths on the worker "
            "(default: the bundled fleet)."
        ),
        "specs_only": "Store the declared servers and tools without starting or connecting.",
    },
    "synthesize": {
        "strategies": "single_server, multi_server and/or featured (default: all three).",
        "per_server": "Tasks per server and strategy (default: synthesize.per_server).",
        "limit": "Total tasks of this run, split over the strategies (default: the whole plan).",
        "seed": "Seed of the whole plan (default: synthesize.seed); it names the task ids.",
    },
    "filter_tasks": {"limit": "Rate at most this many unrated tasks (default: all)."},
    "trajectories": {
        "styles": "Agent styles: function-calling, react and/or langchain (default: config).",
        "limit": "At most this many new trajectories (default: all that are left).",
    },
    "filter_trajectories": {"limit": "Rate at most this many trajectories (default: all)."},
    "irrelevance": {"seed": "Seed of the pairing of tasks and servers (default: synthesize.seed)."},
    "diversify": {
        "variants": "Variants per task and mode (default: extensions.diversify_variants).",
        "seed": "Seed of the persona and constraint choice (default: synthesize.seed).",
    },
    "multi-turn": {
        "methods": "split and/or extend (default: both).",
        "follow_ups": "User turns to add when extending (default: extensions.multi_turn_user_turns).",
    },
    "export": {
        "out_dir": (
            "Dataset folder on the worker; an existing one is refused unless `overwrite` "
            "(relative paths are under the worker's directory)."
        ),
        "formats": "parquet, jsonl, openai and/or sharegpt (default: parquet).",
        "mix": "`paper`: the paper's SFT subset proportions; `none`: every kept row.",
        "overwrite": "Replace an existing `out_dir`.",
        "seed": "Seed of the mix sampling.",
    },
    "report": {"out": "HTML file to write on the worker (relative paths: the worker's directory)."},
    "pipeline": {
        "stages": "Stages to consider, in pipeline order (default: all); complete ones are skipped.",
        "limit": "Passed to every stage that takes a limit (default: no limit).",
        "limits": "A limit per stage, e.g. {trajectories: 50}; wins over `limit`.",
        "seed": "Passed to every stage that takes a seed.",
        "task_runner": "Where the stages' batches run: threads (default), Dask or Ray.",
        "stage_params": "A stage's own parameters, e.g. {onboard: {catalogs: [...]}}.",
        "force": "Run every chosen stage even when it is complete.",
        "dry_run": "Run nothing and send no model call: publish what the stages would cost "
        "(items, tokens, dollars, time; like `toucan estimate`) as an artifact.",
    },
}


def describe_parameter(flow_name: str, parameter: str) -> str | None:
    """The help text of `parameter` in flow `flow_name`, or None when there is none."""
    return OWN.get(flow_name, {}).get(parameter) or SHARED.get(parameter)


def documented(flow_name: str) -> Callable[[F], F]:
    """A decorator (under `@flow`) that appends an `Args:` section describing each of the
    function's parameters to its docstring. ValueError naming the parameters that have no
    description."""

    def document(fn: F) -> F:
        names = list(inspect.signature(fn).parameters)
        missing = [name for name in names if describe_parameter(flow_name, name) is None]
        if missing:
            raise ValueError(f"flow {flow_name!r}: no description for parameter(s) {missing}")
        lines = [f"    {name}: {describe_parameter(flow_name, name)}" for name in names]
        fn.__doc__ = inspect.cleandoc(fn.__doc__ or flow_name) + "\n\nArgs:\n" + "\n".join(lines)
        return fn

    return document
