"""Prefect settings for CLI use, applied before Prefect is imported.

Ephemeral mode (no server) is the default. Prefect's own INFO logs and its shutdown noise
would drown the CLI's progress and tables, so the CLI keeps them at WARNING unless asked.
"""

from __future__ import annotations

import logging
import os

from toucan.secrets import secrets_withheld

QUIET_DEFAULTS = {
    "PREFECT_LOGGING_LEVEL": "WARNING",
    "PREFECT_LOGGING_LOG_PRINTS": "false",
    "PREFECT_SERVER_LOGGING_LEVEL": "ERROR",
    "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore",
    "PREFECT_UI_ENABLED": "false",
    # the ephemeral API server starts in ~5 s idle, far slower on a busy 2-core machine
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_CLIENT_ENABLE_METRICS": "false",
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "LITELLM_LOG": "ERROR",
}


def configure_quiet_prefect(verbose: bool = False) -> None:
    """Set defaults the user has not set themselves; call before `import prefect`."""
    for key, value in QUIET_DEFAULTS.items():
        os.environ.setdefault(key, value)
    if verbose:
        os.environ["PREFECT_LOGGING_LEVEL"] = "INFO"
    for name in ("prefect", "prefect.server", "httpx", "LiteLLM", "mcp"):
        logging.getLogger(name).setLevel(logging.INFO if verbose else logging.WARNING)
    # Events flushed after shutdown print CancelledError tracebacks; they are not user errors.
    logging.getLogger("prefect.server.services.task_run_recorder").setLevel(logging.CRITICAL)
    logging.getLogger("prefect.server.events").setLevel(logging.CRITICAL)


def start_ephemeral_api() -> None:
    """Start Prefect's ephemeral API server now (it would start with the first flow), with
    secrets withheld from the copy of our environment Prefect hands it: it needs none, and
    any process of ours could read it. No-op when PREFECT_API_URL names a server."""
    from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_EPHEMERAL_ENABLED

    if PREFECT_API_URL.value() or not PREFECT_SERVER_EPHEMERAL_ENABLED.value():
        return
    from prefect.server.api.server import SubprocessASGIServer

    with secrets_withheld():
        SubprocessASGIServer().start()
