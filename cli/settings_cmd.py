"""`toucan config`: show the settings in force, so users see what a run will use."""

from __future__ import annotations

from cli.app import ConfigOpt, ProfileOpt, app, fail, print_json
from toucan.config import load_settings
from toucan.errors import ConfigError


@app.command("config")
def show_config(config: ConfigOpt = None, profile: ProfileOpt = None) -> None:
    """Print the merged settings (defaults + file + profile + environment) as JSON."""
    try:
        settings = load_settings(config, profile=profile)
        if settings.budget.per_stage:  # the registry loads every stage: only when caps name one
            from flows.registry import check_settings

            check_settings(settings)
    except ConfigError as exc:
        fail(str(exc))
        return
    print_json(settings.model_dump(mode="json"))
