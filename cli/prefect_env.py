"""Prefect settings for CLI use, applied before Prefect is imported.

Ephemeral mode (no server) is the default. Prefect's own INFO logs and its shutdown noise
would drown the CLI's progress and tables, so the CLI keeps them at WARNING unless asked,
and its run logs and any traceback off the console unless --debug (`quiet_console_logs`).
"""

from __future__ import annotations

import logging
import os

# the loggers of Prefect's flow and task runs and of its engine around them
RUN_LOGGERS = ("prefect.flow_runs", "prefect.task_runs", "prefect.engine", "prefect.flow_engine")
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


class QuietConsole(logging.Filter):
    """Without --debug, on the console: no Prefect run log (they still reach the Prefect API
    and its UI) and no traceback. A failure is the CLI's one line (cli/failures.py)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith(RUN_LOGGERS):
            return False
        # console handlers are the last a record reaches (the root's), so dropping the
        # traceback here leaves what the API handlers send as it was
        record.exc_info = record.exc_text = record.stack_info = None
        return True


def quiet_console_logs() -> None:
    """Put `QuietConsole` on the console handlers Prefect configured (call after importing
    Prefect; once is enough, again is harmless). Other handlers (a test's log capture) stay
    as they are."""
    for name in ("", "prefect._internal"):
        for handler in logging.getLogger(name).handlers:
            ours = type(handler).__module__.startswith("prefect.")
            if ours and not any(isinstance(f, QuietConsole) for f in handler.filters):
                handler.addFilter(QuietConsole())
