"""Consecutive failures per key: N in a row pause the key for the rest of the run.

One counter for both circuit breakers: a model deployment (toucan/llm/breaker.py, keyed by
deployment name) and an MCP server (tasks/agent/breaker.py, keyed by server id). A failure
adds one to the key's streak, a success resets it, and at `threshold` the key is paused with
the reason and text of the failure that paused it. A pause is final for the run.

One breaker serves every batch of a run, and batches run on their own event loops in their
own threads: the state sits behind a thread lock, and whoever pauses a key wakes the calls
waiting on it on their own loops (`LoopWaiters`), so a retry's backoff or a tool call in
flight ends the moment its key is paused. Pickled (a Dask worker), a breaker keeps its counts
and pauses but starts with its own lock and no waiters: each process then counts alone.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from toucan.llm.waiters import LoopWaiters

T = TypeVar("T")


@dataclass(frozen=True)
class Paused:
    """Why a key stopped taking work: the reason token and text of the failure that paused
    it, with how many came in a row."""

    key: str
    reason: str
    detail: str


class FailureStreaks:
    """Consecutive failures per key; `threshold` None counts but never pauses."""

    # what one failure is, in a pause's detail ("5 failed requests in a row; last: ...")
    noun = "failures"

    def __init__(self, threshold: int | None = 5) -> None:
        self.threshold = threshold
        self.failures: dict[str, int] = {}
        self.opened: dict[str, Paused] = {}
        self._lock = threading.Lock()
        self._waiters = LoopWaiters()

    def __getstate__(self) -> dict[str, Any]:
        with self._lock:
            state = dict(self.__dict__)
        del state["_lock"], state["_waiters"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()
        self._waiters = LoopWaiters()

    def record_failure(self, key: str, reason: str, detail: str = "") -> bool:
        """One failure of `key`; True when it is the one that paused the key."""
        with self._lock:
            count = self.failures.get(key, 0) + 1
            self.failures[key] = count
            if self.threshold is None or count < self.threshold or key in self.opened:
                return False
            self.opened[key] = Paused(
                key, reason, f"{count} {self.noun} in a row; last: {detail[:300]}"
            )
        self._waiters.wake_all()
        return True

    def record_success(self, key: str) -> None:
        with self._lock:
            self.failures[key] = 0

    def paused(self, key: str) -> Paused | None:
        return self.opened.get(key)

    def pause(self, paused: Paused) -> None:
        """Carry a pause decided elsewhere (an earlier run, a batch in another process)."""
        with self._lock:
            self.opened.setdefault(paused.key, paused)
        self._waiters.wake_all()

    async def sleep(self, key: str, seconds: float) -> None:
        """A retry's backoff: `seconds`, or until `key` is paused if that is sooner."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            with self._lock:
                if key in self.opened:
                    return
                parked = self._waiters.park()
            await self._waiters.wait(parked, left)  # woken by any pause: look again

    async def unless_paused(self, key: str, work: Awaitable[T]) -> T | Paused:
        """`work`'s result, or the pause of `key` if that comes first (the work is then
        cancelled and awaited): a call in flight need not wait out its own timeout once its
        key is known to be down."""
        return await self.run_until(work, lambda: self.opened.get(key))

    def wake(self) -> None:
        """Have every `run_until` look at its `stop` again (a pause does this by itself)."""
        self._waiters.wake_all()

    async def run_until(self, work: Awaitable[T], stop: Callable[[], Paused | None]) -> T | Paused:
        """`work`'s result, or what `stop` returns once it returns something: looked at first
        and after every pause or `wake`, under the breaker's lock (so `stop` must not take
        it). The work is then cancelled and awaited."""
        running = asyncio.ensure_future(work)
        try:
            while not running.done():
                with self._lock:
                    stopped = stop()
                    parked = None if stopped else self._waiters.park()
                if parked is None:
                    return stopped  # type: ignore[return-value]
                # `wait` forgets the parked future when it ends, woken or cancelled
                woken = asyncio.ensure_future(self._waiters.wait(parked))
                try:
                    await asyncio.wait({running, woken}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    woken.cancel()
            return running.result()
        finally:
            if not running.done():
                running.cancel()
                await asyncio.wait({running})
            if not running.cancelled():
                running.exception()  # retrieved: a failure after the stop is not news
