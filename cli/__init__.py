"""The `toucan` command. Each module of this package adds its commands to `app`; read-only
commands import neither Prefect nor flows/, stage commands import their flow when they run."""

from __future__ import annotations

from cli import (  # noqa: F401 - imported for the commands they register
    demo,
    deploy,
    export,
    extensions,
    filter_tasks,
    filter_trajectories,
    onboard,
    report,
    settings_cmd,
    show,
    status,
    synthesize,
    trajectories,
)
from cli.app import app

__all__ = ["app"]
