"""Circuit breaker per model deployment: N failed requests in a row pause it for the run.

A provider outage answers every request with a 5xx, a timeout or a refused connection; without
a breaker each call still goes through all its retries (150 doomed requests and 107 s for 30
items in issue 15, fault 5). Here every failed request counts, retries included, a success
resets the count, and at `models.circuit_breaker_failures` the deployment is paused: nothing
more is sent to it, retries waiting in their backoff stop at once, and calls go to a live
deployment of their group or fail as `model_unavailable` (the router). 429s and rejected
requests (4xx other than 401/403/404) never count: the deployment is up. The state is guarded
by a thread lock, so one breaker serves every router of a run (each batch in its own thread).
A breaker pickled into another process (a Dask worker) is a copy that starts from the pauses
known here; its own pauses come back as the batch's `model_unavailable` events.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

from toucan.llm.waiters import LoopWaiters


@dataclass(frozen=True)
class DeploymentPaused:
    """Why a deployment stopped taking requests: the last failure's reason and text."""

    deployment: str
    reason: str
    detail: str


class ModelBreaker:
    """Consecutive failures per deployment; `threshold` None never pauses."""

    def __init__(self, threshold: int | None = 5) -> None:
        self.threshold = threshold
        self.failures: dict[str, int] = {}
        self.opened: dict[str, DeploymentPaused] = {}
        self._lock = threading.Lock()
        self._waiters = LoopWaiters()

    def __getstate__(self) -> dict[str, Any]:
        """A copy for another process: the counts and pauses, no lock or waiters."""
        with self._lock:
            return {
                "threshold": self.threshold,
                "failures": dict(self.failures),
                "opened": dict(self.opened),
            }

    def __setstate__(self, state: dict[str, Any]) -> None:
        vars(self).update(state)
        self._lock = threading.Lock()
        self._waiters = LoopWaiters()

    def record_failure(self, deployment: str, reason: str, detail: str = "") -> None:
        """One failed request; pauses the deployment at `threshold` in a row."""
        with self._lock:
            count = self.failures.get(deployment, 0) + 1
            self.failures[deployment] = count
            if self.threshold is None or count < self.threshold or deployment in self.opened:
                return
            self.opened[deployment] = DeploymentPaused(
                deployment, reason, f"{count} failed requests in a row; last: {detail[:300]}"
            )
        self._waiters.wake_all()

    def record_success(self, deployment: str) -> None:
        with self._lock:
            self.failures[deployment] = 0

    def paused(self, deployment: str) -> DeploymentPaused | None:
        return self.opened.get(deployment)

    def pause(self, paused: DeploymentPaused) -> None:
        """Carry a pause decided elsewhere (e.g. by an earlier run of the same stage)."""
        with self._lock:
            self.opened.setdefault(paused.deployment, paused)
        self._waiters.wake_all()

    async def sleep(self, deployment: str, seconds: float) -> None:
        """A retry's backoff: `seconds`, or until the deployment is paused if that is sooner."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            with self._lock:
                if deployment in self.opened:
                    return
                parked = self._waiters.park()
            await self._waiters.wait(parked, left)  # woken by any pause: look again
