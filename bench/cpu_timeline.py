"""A process's CPU time against the model calls it has made, sampled while it runs.

A run's CPU ms per item mixes what it pays once (imports, the plan's walks of the store, the
summary) with what it pays per item; at 10k items the fixed part is a large share, at 1M a
small one, so the two totals do not compare per-item cost alone. Sampling the process's CPU
time (user + system, all its threads, DuckDB's included: `psutil`) with the fake model's
call count (`GET /_fake/calls` through tests/fake_llm.py `control`) gives the CPU of each
stretch of the run per call: `steady` reads it between 10% and 90% of the calls, `tenths`
for each tenth, so a cost that grows with the store shows as a rising row.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import psutil

from tests.fake_llm import control


@dataclass
class Sample:
    wall_s: float
    cpu_s: float  # the process's user + system seconds since it started
    calls: int  # the fake model's calls since the timeline started


def fake_calls(base_url: str) -> int:
    """The fake model server's call count (all rules, all statuses)."""
    return int(control(base_url, "/_fake/calls")["total"])


@dataclass
class CpuTimeline:
    """Samples `pid` every `period_s` seconds in a thread until the process exits or `stop()`."""

    pid: int
    base_url: str  # the fake model server's (".../v1")
    period_s: float = 1.0
    samples: list[Sample] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._process = psutil.Process(self.pid)
        self._calls_before = fake_calls(self.base_url)
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        try:
            times = self._process.cpu_times()
        except psutil.NoSuchProcess:
            self._done.set()
            return
        calls = fake_calls(self.base_url) - self._calls_before
        self.samples.append(Sample(time.perf_counter(), times.user + times.system, calls))

    def _run(self) -> None:
        while not self._done.wait(self.period_s):
            self._sample()

    def stop(self) -> None:
        self._done.set()
        self._thread.join()

    def between(self, low: float, high: float) -> float | None:
        """CPU ms per call from the first sample at `low` of the final call count to the last
        at or below `high` (fractions); None with fewer than two samples in between."""
        if not self.samples or not self.samples[-1].calls:
            return None
        total = self.samples[-1].calls
        inside = [s for s in self.samples if low * total <= s.calls <= high * total]
        if len(inside) < 2 or inside[-1].calls == inside[0].calls:
            return None
        first, last = inside[0], inside[-1]
        return (last.cpu_s - first.cpu_s) * 1000 / (last.calls - first.calls)

    def steady(self) -> float | None:
        """CPU ms per call between 10% and 90% of the run's calls."""
        return self.between(0.1, 0.9)

    def tenths(self) -> list[float | None]:
        """CPU ms per call in each tenth of the run's calls."""
        return [self.between(i / 10, (i + 1) / 10) for i in range(10)]
