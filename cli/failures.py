"""How a command fails: one line on stderr that ends in its reason token, e.g.

    error: cannot open store data/toucan.duckdb: IO Error: ... [store_error]

and exit 2 for toucan's own errors (ToucanError: bad settings, a bad store, a bad option),
1 for anything else (the operating system's: `disk_full`, `permission_denied`, ...; or a
bug: `internal_error`), 143 on SIGTERM and 130 on Ctrl-C. The traceback, and Prefect's
flow-run logs, appear only with `--debug` (anywhere on the command line) or TOUCAN_DEBUG=1.

`ToucanGroup` is the click group of the `toucan` app, so this holds for every command, for
failures raised inside a Prefect flow run too (Prefect re-raises them in the caller), and for
a command line typer refuses (`bad_option`, exit 2).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import traceback
from typing import Any, NoReturn

import duckdb
import typer

# typer 0.29 carries its own copy of click; its usage errors are these
from typer._click.exceptions import NoArgsIsHelpError, UsageError
from typer.core import TyperGroup

from toucan.errors import StoreError, ToucanError, failure_cause, failure_reason
from toucan.interrupts import Terminated

DEBUG_FLAG = "--debug"
DEBUG_ENV = "TOUCAN_DEBUG"
TOUCAN_EXIT, OTHER_EXIT = 2, 1
INTERRUPT_EXIT = 128  # + the signal number, as a shell reports a process a signal ended


def debug_enabled() -> bool:
    return os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")


def failure_line(message: str, reason: str) -> str:
    """`error: <message on one line> [<reason>]`."""
    return f"error: {' '.join(message.split())} [{reason}]"


def describe(error: BaseException) -> str:
    """What went wrong, for a user: our own message, an OS error's text and file, else the
    exception's class and text (a bug: --debug shows where)."""
    cause = failure_cause(error)
    if isinstance(cause, ToucanError):
        return str(cause) or type(cause).__name__
    if isinstance(cause, OSError) and cause.strerror:
        where = f": {cause.filename}" if cause.filename else ""
        return f"{cause.strerror}{where}"
    text = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    return f"{text} (run with {DEBUG_FLAG} for the traceback)"


def as_toucan_error(error: Exception) -> Exception:
    """A DuckDB error that reached the command unwrapped (a query on a damaged store) is a
    StoreError; anything else is as it was."""
    if isinstance(error, duckdb.Error):
        wrapped = StoreError(f"store: {error}")
        wrapped.__cause__ = error
        return wrapped
    return error


def termination_signal(stop: BaseException) -> int | None:
    """The signal behind an interruption: SIGTERM for ours (Terminated) or Prefect's
    (TerminationSignal, which carries `signal`), SIGINT for Ctrl-C; None for anything else."""
    if isinstance(stop, Terminated):
        return stop.signum
    if isinstance(stop, KeyboardInterrupt):
        return signal.SIGINT
    carried = getattr(stop, "signal", None)
    return carried if type(stop).__name__ == "TerminationSignal" and carried else None


def exit_code(error: BaseException) -> int:
    return TOUCAN_EXIT if isinstance(failure_cause(error), ToucanError) else OTHER_EXIT


def print_failure(message: str, reason: str) -> None:
    """The one line; plain text (a console's markup would take `[reason]` for a style)."""
    sys.stderr.write(failure_line(message, reason) + "\n")
    sys.stderr.flush()


# a process is terminated once: whichever reports it first (the command's failure handling
# or cli/stopping.py's deadline) prints the line
_termination_reported = threading.Lock()


def report_termination(signum: int) -> None:
    """Print `error: stopped by signal SIGTERM [interrupted]`, once per process."""
    if _termination_reported.acquire(blocking=False):
        print_failure(f"stopped by signal {signal.Signals(signum).name}", "interrupted")


def fail(message: str, reason: str = "bad_option", code: int = TOUCAN_EXIT) -> NoReturn:
    """End the command now with `message`; for checks the command makes itself."""
    print_failure(message, reason)
    raise typer.Exit(code)


class ToucanGroup(TyperGroup):
    """The `toucan` group: `--debug` is taken from anywhere on the command line, and a
    command's exception becomes one line and an exit code (see the module docstring)."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if DEBUG_FLAG in args:
            os.environ[DEBUG_ENV] = "1"  # also read by what this process starts
            args = [arg for arg in args if arg != DEBUG_FLAG]
        try:
            return super().parse_args(ctx, args)
        except NoArgsIsHelpError:  # shows the help
            raise
        except UsageError as wrong:
            self._refuse(wrong)

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except NoArgsIsHelpError:  # shows the help
            raise
        except UsageError as wrong:  # an unknown option or command, a bad value
            self._refuse(wrong)
        except (typer.Exit, typer.Abort, typer.TyperException):  # typer's own endings
            raise
        except Exception as raised:
            error = as_toucan_error(raised)
            self._end(raised, describe(error), failure_reason(error))
            raise typer.Exit(exit_code(error)) from None
        except BaseException as stop:  # Ctrl-C, SIGTERM (ours or Prefect's TerminationSignal)
            signum = termination_signal(stop)
            if signum is None:  # SystemExit, a generator's exit: not a failure of ours
                raise
            if debug_enabled():
                traceback.print_exception(stop, file=sys.stderr)
            if signum == signal.SIGINT:
                print_failure("interrupted", "interrupted")
            else:
                report_termination(signum)
            raise typer.Exit(INTERRUPT_EXIT + signum) from None

    @staticmethod
    def _refuse(wrong: UsageError) -> NoReturn:
        hint = f" (see {wrong.ctx.command_path} --help)" if wrong.ctx else ""
        print_failure(f"{wrong.format_message()}{hint}", "bad_option")
        raise typer.Exit(wrong.exit_code) from None

    @staticmethod
    def _end(error: Exception, message: str, reason: str) -> None:
        if debug_enabled():
            traceback.print_exception(error, file=sys.stderr)
        print_failure(message, reason)
