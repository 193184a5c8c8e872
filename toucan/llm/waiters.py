"""Asyncio futures that any thread may resolve.

The budget ledger and the model circuit breaker are shared by every router of a run, and the
routers run on their own event loops in their own threads (one per batch). A call that waits
on that shared state parks a future of its own loop here; whoever changes the state wakes
every parked future on its own loop (`call_soon_threadsafe`).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading

from toucan.llm.limiter import resolve_waiter


class LoopWaiters:
    """Futures parked by waiting calls, on whatever loops they run on."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._futures: list[asyncio.Future[None]] = []

    def park(self) -> asyncio.Future[None]:
        """A future of the running loop that `wake_all` resolves. Park it while holding the
        lock that guards the state it waits on, so no change slips between check and park."""
        future = asyncio.get_running_loop().create_future()
        with self._lock:
            self._futures.append(future)
        return future

    async def wait(self, future: asyncio.Future[None], timeout_s: float | None = None) -> bool:
        """Wait for a parked future: True when woken, False when `timeout_s` passed first."""
        try:
            async with asyncio.timeout(timeout_s):
                await future
            return True
        except TimeoutError:
            return False
        finally:
            with self._lock:
                if future in self._futures:
                    self._futures.remove(future)

    def wake_all(self) -> None:
        """Resolve every parked future, each on its own loop; safe from any thread."""
        with self._lock:
            woken, self._futures = self._futures, []
        for future in woken:
            # a loop that closed meanwhile has cancelled its waits already
            with contextlib.suppress(RuntimeError):
                future.get_loop().call_soon_threadsafe(resolve_waiter, future)
