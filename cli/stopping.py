"""SIGTERM (a scheduler, `kill`, `docker stop`) ends a toucan process within seconds, with
exit 143, its one line, and no child process left.

The signal takes the Ctrl-C path (toucan.interrupts; during a flow run Prefect's own handler
raises TerminationSignal): the run is marked interrupted as the exception unwinds the stage,
and context managers stop what they started. That unwinding can wait on batches still running
in worker threads (Prefect's thread pool lets a started 512-item batch finish) and on
Prefect's exit-time flushes. So a deadline is armed the moment the signal arrives: GRACE_S
later, whatever the process is doing, it stops its children (Prefect's API server, MCP
servers, the local model server) and exits.

Python runs signal handlers in the main thread only, between bytecodes, and the handler in
force may be Prefect's; the C-level handler however writes every signal's number to the
wakeup fd, which a thread of ours reads (`watch_for_termination`). Armed once, by the process
entry point (`cli.app`): never inside a test process that invokes commands in-process.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import psutil

from cli.failures import INTERRUPT_EXIT, report_termination

GRACE_S = 3.0  # for the run to be marked and the stage's context managers to close
CHILD_STOP_S = 2.0  # for a child to end on SIGTERM before it is killed


def watch_for_termination(grace_s: float = GRACE_S) -> bool:
    """From now on, a SIGTERM ends this process within `grace_s` (+ CHILD_STOP_S). Call from
    the main thread; False (nothing armed) where the wakeup fd is taken or cannot be set."""
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    try:
        previous = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    except ValueError:  # not the main thread
        previous = None
    if previous != -1:  # someone else's, or nothing set: leave theirs in place
        if previous is not None:
            signal.set_wakeup_fd(previous)
        os.close(read_fd)
        os.close(write_fd)
        return False
    threading.Thread(
        target=_read_signals, args=(read_fd, grace_s), name="signal-watch", daemon=True
    ).start()
    return True


def _read_signals(read_fd: int, grace_s: float) -> None:
    while received := os.read(read_fd, 64):
        if signal.SIGTERM in received:
            time.sleep(grace_s)
            end_process(signal.SIGTERM)


def end_process(signum: int) -> None:
    """Report, stop every child, exit 128 + signum at once (no atexit: that is what hangs)."""
    report_termination(signum)
    stop_children()
    os._exit(INTERRUPT_EXIT + signum)


def stop_children(wait_s: float = CHILD_STOP_S) -> list[psutil.Process]:
    """SIGTERM every descendant of this process, SIGKILL those still running `wait_s` later;
    returns the ones that had to be killed."""
    children = psutil.Process().children(recursive=True)
    for child in children:
        try:
            child.terminate()
        except psutil.NoSuchProcess:
            continue
    _, alive = psutil.wait_procs(children, timeout=wait_s)
    for child in alive:
        try:
            child.kill()
        except psutil.NoSuchProcess:
            continue
    return alive
