"""How a stage command runs its flow: progress bars unless --json, a clear message and exit 2
on a ToucanError (or a refused output folder / bad value), and the summary printed as JSON or
handed back for the command's tables."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from cli.app import fail, print_json
from cli.prefect_env import start_ephemeral_api
from cli.progress_view import progress_bars
from toucan.errors import ToucanError


def run_flow_command(
    flow_fn: Callable[..., Any],
    *,
    as_json: bool,
    store: Path | None,
    config: Path | None,
    **params: Any,
) -> Any | None:
    """The flow's summary for the command to print, or None once --json has printed it."""
    start_ephemeral_api()
    try:
        with progress_bars(enabled=not as_json):
            summary = flow_fn(
                store=str(store) if store else None,
                config=str(config) if config else None,
                **params,
            )
    except (ToucanError, FileExistsError, ValueError) as exc:
        fail(str(exc))
    if as_json:
        print_json(summary.model_dump(mode="json") if isinstance(summary, BaseModel) else summary)
        return None
    return summary
