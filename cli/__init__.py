"""The `toucan` command. Each module of this package adds its commands to `app`; read-only
commands import neither Prefect nor flows/, stage commands import their flow when they run."""

from __future__ import annotations

from cli import (  # noqa: F401 - imported for the commands they register
    demo,
    deploy,
    estimate,
    export,
    extensions,
    onboard,
    settings_cmd,
    show,
    stages,
    status,
)
from cli.app import app

__all__ = ["app"]
