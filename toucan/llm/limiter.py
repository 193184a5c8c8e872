"""Per-deployment admission: an AIMD concurrency window, a 429 pause, rpm spacing and tpm budget.

A 429 halves the window and pauses new starts for the server's `retry-after`; each success grows
the window again (by one per success up to the halving point, then by about one per window). So
under a sustained 429 storm the run slows to what the provider allows and keeps going, and when
the storm passes it climbs back to `max_concurrency`. The state is guarded by a thread lock and
waiters are woken on their own event loop, so one limiter may serve several loops.
"""

from __future__ import annotations

import asyncio
import collections
import threading
import time
from dataclasses import dataclass, field

DEFAULT_PAUSE_S = 1.0  # a 429 without retry-after pauses new starts this long
MIN_PAUSE_S = 0.05
MAX_PAUSE_S = 60.0  # never trust a retry-after that would stall the run for longer


@dataclass
class LimiterStats:
    rate_limited: int = 0
    window_cuts: int = 0
    lowest_window: float = 0.0


@dataclass
class AdaptiveLimiter:
    max_concurrency: int = 256
    rpm: int | None = None
    tpm: int | None = None
    min_concurrency: int = 1
    window: float = field(init=False)
    threshold: float = field(init=False)
    in_flight: int = field(init=False, default=0)
    paused_until: float = field(init=False, default=0.0)
    next_start: float = field(init=False, default=0.0)
    last_cut: float = field(init=False, default=0.0)
    stats: LimiterStats = field(init=False, default_factory=LimiterStats)

    def __post_init__(self) -> None:
        self.window = float(self.max_concurrency)
        self.threshold = float(self.max_concurrency)
        self.stats.lowest_window = self.window
        self._lock = threading.Lock()
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._tokens: collections.deque[tuple[float, int]] = collections.deque()
        self._tokens_sum = 0

    async def acquire(self) -> None:
        """Wait for a slot; returns holding one (pair with `release`)."""
        while True:
            with self._lock:
                now = time.monotonic()
                delay = max(self.paused_until, self.next_start, self._tpm_free_at(now)) - now
                if delay <= 0 and self.in_flight < max(self.min_concurrency, int(self.window)):
                    self.in_flight += 1
                    if self.rpm:
                        self.next_start = max(self.next_start, now) + 60.0 / self.rpm
                    return
                waiter: asyncio.Future[None] | None = None
                if delay <= 0:
                    waiter = asyncio.get_running_loop().create_future()
                    self._waiters.append(waiter)
            if waiter is None:
                await asyncio.sleep(delay)
                continue
            try:
                await waiter
            except asyncio.CancelledError:
                with self._lock:
                    if waiter in self._waiters:
                        self._waiters.remove(waiter)
                raise

    def release(self, *, succeeded: bool, tokens: int = 0) -> None:
        with self._lock:
            self.in_flight -= 1
            if succeeded and self.window < self.max_concurrency:
                step = 1.0 if self.window < self.threshold else 1.0 / self.window
                self.window = min(float(self.max_concurrency), self.window + step)
            if tokens and self.tpm:
                self._tokens.append((time.monotonic(), tokens))
                self._tokens_sum += tokens
            self._wake_waiters()

    def on_rate_limited(self, retry_after: float | None) -> None:
        """A 429: pause new starts and halve the window (once per pause, not per 429)."""
        pause = DEFAULT_PAUSE_S if retry_after is None else retry_after
        pause = min(MAX_PAUSE_S, max(MIN_PAUSE_S, pause))
        with self._lock:
            now = time.monotonic()
            self.stats.rate_limited += 1
            self.paused_until = max(self.paused_until, now + pause)
            if now - self.last_cut >= pause:
                self.last_cut = now
                self.window = max(float(self.min_concurrency), self.window / 2)
                self.threshold = self.window
                self.stats.window_cuts += 1
                self.stats.lowest_window = min(self.stats.lowest_window, self.window)

    def _tpm_free_at(self, now: float) -> float:
        if not self.tpm:
            return 0.0
        while self._tokens and self._tokens[0][0] < now - 60.0:
            self._tokens_sum -= self._tokens.popleft()[1]
        if self._tokens_sum < self.tpm or not self._tokens:
            return 0.0
        return self._tokens[0][0] + 60.0

    def _wake_waiters(self) -> None:
        free = max(self.min_concurrency, int(self.window)) - self.in_flight
        while free > 0 and self._waiters:
            waiter = self._waiters.popleft()
            if waiter.done():
                continue
            free -= 1
            waiter.get_loop().call_soon_threadsafe(resolve_waiter, waiter)


def resolve_waiter(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
