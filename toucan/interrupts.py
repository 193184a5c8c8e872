"""Ctrl-C and SIGTERM stop a run cleanly, and never in the middle of a store write.

DuckDB checks for signals while it executes: an interrupt inside COMMIT becomes an error that
leaves it unclear whether the batch landed, and the run is then recorded as failed rather than
interrupted. Writes therefore run inside `uninterrupted()`, which holds a signal back and hands
it to whichever handler was in force (ours, Python's Ctrl-C handler, or the one Prefect
installs around a flow run) as soon as the write ends.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from types import FrameType

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C would be; `signum` says which signal (exit 128 + it)."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"signal {signal.Signals(signum).name}")
        self.signum = signum


def handle_signals() -> None:
    """SIGTERM (a scheduler, `kill`, docker stop) takes the Ctrl-C path, so the run is marked
    interrupted and the servers this process started are stopped instead of outliving it."""
    signal.signal(signal.SIGTERM, _raise_interrupt)


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise Terminated(signum)


@contextlib.contextmanager
def uninterrupted() -> Iterator[None]:
    """Hold SIGINT/SIGTERM back until the block ends, then deliver them. Handlers only run in
    the main thread, so other threads need no holding back."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    previous = {signum: signal.getsignal(signum) for signum in SIGNALS}
    for signum in SIGNALS:
        signal.signal(signum, lambda received, frame: pending.append(received))
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for signum in dict.fromkeys(pending):
            _deliver(signum, previous[signum])


def _deliver(signum: int, handler: object) -> None:
    if callable(handler):
        handler(signum, None)
    elif handler == signal.SIG_DFL:
        os.kill(os.getpid(), signum)
