"""Circuit breaker per MCP server, one per run: N infrastructure failures in a row (start
failed, crashed, timed out, junk reply) pause the server for the rest of the run.

Tool errors do not count: a tool answering "not found" is a working server. The counting is
the core's (toucan/breaker.py, shared with the model breaker), so one breaker serves every
batch of the run, each on its own thread and loop: a server's failures add up across batches
and five timeouts pause it, wherever they happened (issue 15, fault 6: counted per batch it
took ten). On a Dask runner each worker process holds a copy; the pauses of finished batches
are still carried into the next ones (tasks/agent/batch.py `paused`).

`watch_for_hang` keeps a hanging server from costing one full call timeout per call, one
after another (a batch runs a few items at a time, and a server takes a few calls at a time,
so their calls would queue). A server whose last call timed out (or got junk instead of an
answer) is *hanging* until a call to it is answered again. The next call is a probe: it goes
through with its full timeout, while any other call to the server fails at once
(`server_hanging`). Once two hang failures came in a row the server is known to hang: no call
is sent, and the calls still waiting on it (in flight, or queued for one of its slots) stop
waiting, as `server_hanging` too. Each of those counts as a failure, so a hung server is
paused about one timeout after its calls began (two when it had one call at a time), while a
server with one slow tool is cleared by its next answer. A call in flight also ends the
moment its server is paused (`server_paused`), not at its own timeout.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from toucan.breaker import FailureStreaks, Paused

T = TypeVar("T")

# why a server stopped taking calls (`key` is the server id)
ServerPaused = Paused
# failures that leave a call waiting on a server that may never answer
HANG_REASONS = frozenset({"tool_timeout", "junk_reply"})
SERVER_PAUSED = "server_paused"
SERVER_HANGING = "server_hanging"
# hang failures in a row after which no probe is sent: the first may be one slow tool
KNOWN_TO_HANG = 2


class ServerBreaker(FailureStreaks):
    """Consecutive infrastructure failures per server id, and which servers hang."""

    noun = "failed calls"

    def __init__(self, threshold: int | None = 5) -> None:
        super().__init__(threshold)
        self.hangs: dict[str, int] = {}  # hang failures in a row, per server that hangs
        self.probing: set[str] = set()  # a call in flight testing a hanging server

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self.probing = set()  # a probe belongs to the process that sent it

    def record_failure(self, key: str, reason: str, detail: str = "") -> bool:
        with self._lock:
            if reason in HANG_REASONS or reason == SERVER_HANGING:
                self.hangs[key] = self.hangs.get(key, 0) + 1
            else:  # it answered, if only to crash: a restarted server may be well
                self.hangs.pop(key, None)
            now_known = self.hangs.get(key) == KNOWN_TO_HANG
        paused = super().record_failure(key, reason, detail)
        if now_known:
            self.wake()  # the calls waiting on it stop (`watch_for_hang`)
        return paused

    def record_success(self, key: str) -> None:
        with self._lock:
            self.hangs.pop(key, None)
        super().record_success(key)

    def admit(self, key: str) -> tuple[bool, Paused | None]:
        """(whether the call is a probe, refusal or None) for a call about to go to `key`: a
        paused server refuses it as it was paused; a hanging one lets one probe through, and
        none once it is known to hang, and refuses the other calls as `server_hanging`, each
        refusal counted as a failure."""
        with self._lock:
            if (paused := self.opened.get(key)) is not None:
                return False, paused
            hangs = self.hangs.get(key, 0)
            if hangs == 0:
                return False, None
            if hangs < KNOWN_TO_HANG and key not in self.probing:
                self.probing.add(key)
                return True, None
        detail = f"{hangs} call(s) in a row got no answer; not sent"
        self.record_failure(key, SERVER_HANGING, detail)
        return False, Paused(key, SERVER_HANGING, detail)

    def stop_waiting(self, key: str) -> Paused | None:
        """Why a call to `key` in flight should stop waiting: the server is paused, or known
        to hang. Called under the lock (`run_until`)."""
        if (paused := self.opened.get(key)) is not None:
            return paused
        if (hangs := self.hangs.get(key, 0)) >= KNOWN_TO_HANG:
            return Paused(key, SERVER_HANGING, f"{hangs} call(s) in a row got no answer")
        return None

    async def watch_for_hang(self, key: str, call: Callable[[], Awaitable[T]]) -> T | Paused:
        """`call()`'s result, or why it was not sent or not waited for: the server's pause,
        or `server_hanging` (refused, or given up once the server is known to hang: counted
        here). The caller records the call's own success or failure."""
        probe, refusal = self.admit(key)
        if refusal is not None:
            return refusal
        try:
            outcome = await self.run_until(call(), lambda: self.stop_waiting(key))
        finally:
            if probe:
                with self._lock:
                    self.probing.discard(key)
        if isinstance(outcome, Paused) and outcome.reason == SERVER_HANGING:
            self.record_failure(key, SERVER_HANGING, outcome.detail)
        return outcome
