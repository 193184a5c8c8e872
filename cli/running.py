"""How a stage command runs its flow. `@stage_command` registers a command with the options
every stage command takes (--store, --config, --profile, --json) besides its own, checks the
settings and the store file before anything starts (cli/preflight.py), and hands the options
over as a `RunOptions`; `RunOptions.flow` starts Prefect's API (flows/prefect_api.py), runs
the flow with progress bars unless --json, and prints the summary as JSON or hands it back
for the command's tables
(after a line with the run's model spend). A failure ends the command as cli/failures.py says."""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from cli.app import ConfigOpt, JsonOpt, ProfileOpt, StoreOpt, app, console, print_json
from cli.failures import debug_enabled
from cli.prefect_env import quiet_console_logs
from cli.preflight import check_before_start
from cli.progress_view import progress_bars

STAGE_COMMANDS: list[str] = []  # the commands that run a stage's flow, as registered
COMMON_OPTIONS = (
    ("store", StoreOpt, None),
    ("config", ConfigOpt, None),
    ("profile", ProfileOpt, None),
    ("as_json", JsonOpt, False),
)


@dataclass(frozen=True)
class RunOptions:
    """The options every stage command takes."""

    store: Path | None = None
    config: Path | None = None
    profile: str | None = None
    as_json: bool = False

    def flow(self, flow_fn: Callable[..., Any], **params: Any) -> Any | None:
        """The flow's summary for the command to print, or None once --json has printed it."""
        from flows.prefect_api import start_ephemeral_api

        if not debug_enabled():
            quiet_console_logs()
        start_ephemeral_api()
        with progress_bars(enabled=not self.as_json):
            summary = flow_fn(
                store=str(self.store) if self.store else None,
                config=str(self.config) if self.config else None,
                profile=self.profile,
                **params,
            )
        if self.as_json:
            dumped = summary.model_dump(mode="json") if isinstance(summary, BaseModel) else summary
            print_json(dumped)
            return None
        if spent_by_model := getattr(summary, "spent_by_model", None):  # a StageSummary
            shares = ", ".join(f"{model} ${usd:.4f}" for model, usd in spent_by_model.items())
            console.print(f"model spend ${summary.spent_usd:.4f} ({shares})")
        return summary


def stage_command(name: str | None = None) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Register `fn(run: RunOptions, <its own options>)` as the command `name` (default: the
    function's name), with the common options appended to its own."""

    def register(fn: Callable[..., None]) -> Callable[..., None]:
        hints = typing.get_type_hints(fn, include_extras=True)
        own = list(inspect.signature(fn).parameters.values())[1:]  # all but `run`
        keyword = inspect.Parameter.KEYWORD_ONLY
        parameters = [p.replace(annotation=hints[p.name], kind=keyword) for p in own] + [
            inspect.Parameter(option, keyword, annotation=hint, default=default)
            for option, hint, default in COMMON_OPTIONS
        ]

        @functools.wraps(fn)
        def command(**values: Any) -> None:
            run = RunOptions(**{option: values.pop(option) for option, _, _ in COMMON_OPTIONS})
            check_before_start(run.store, run.config, run.profile)
            fn(run, **values)

        command.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in parameters}
        app.command(name)(command)
        STAGE_COMMANDS.append(name or fn.__name__)
        return fn

    return register
