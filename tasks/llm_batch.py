"""What every LLM stage's batch task shares: the router it builds, the bound on items in flight,
the batch sizes, and the records + events + cache entries it hands back to the flow."""

from __future__ import annotations

import asyncio
import math
import threading
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from toucan.config import ModelsConfig
from toucan.llm.cache import LlmCache
from toucan.llm.router import LlmRouter
from toucan.progress import report_progress
from toucan.records import Event, LlmCacheEntry

T = TypeVar("T")
R = TypeVar("R")

BATCH_ITEMS = 512  # items per Prefect task at least: a crash loses at most the batches in flight
MAX_BATCH_ITEMS = 1024  # and at most; in between, the work is split evenly over the lanes
PARALLEL_BATCHES = 2  # batches running at once; two overlap one batch's tail with the next's start


class BatchOutput(BaseModel):
    """What a batch task returns; the flow writes all of it (it is the single writer)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    records: list[Any] = Field(default_factory=list)
    events: list[Event] = Field(default_factory=list)
    cache_entries: list[LlmCacheEntry] = Field(default_factory=list)


class ProgressCounter:
    """Items done across the batches of one stage run, reported as they finish."""

    def __init__(self, stage: str, total: int, done: int = 0) -> None:
        self.stage = stage
        self.total = total
        self.done = done
        self._lock = threading.Lock()

    def advance(self, item: str | None = None, status: str | None = None) -> None:
        with self._lock:
            self.done += 1
            done = self.done
        report_progress(self.stage, done, self.total, item, status)


def split_batches(items: Sequence[T], concurrency: int) -> tuple[list[list[T]], int]:
    """(batches, items in flight per batch) so that the batches running at once hold
    `concurrency` items in flight together."""
    if not items:
        return [], max(1, concurrency)
    # Each batch ends with a tail in which its share of `concurrency` runs dry; fewer, even
    # batches (one per lane when the work allows) leave less of that idle capacity.
    size = min(MAX_BATCH_ITEMS, max(BATCH_ITEMS, math.ceil(len(items) / PARALLEL_BATCHES)))
    batches = [list(items[i : i + size]) for i in range(0, len(items), size)]
    running = min(PARALLEL_BATCHES, len(batches))
    return batches, max(1, math.ceil(concurrency / running))


def open_router(
    models: ModelsConfig, local_base_url: str | None, cache: LlmCache | None
) -> LlmRouter:
    """A router for this batch's event loop (routers never cross loops, threads or processes)."""
    return LlmRouter(
        models,
        local_base_url=local_base_url,
        cache=cache,
        rate_limit_patience_s=models.rate_limit_patience_s,
    )


async def run_bounded(
    items: Sequence[T],
    work: Callable[[T], Awaitable[R]],
    concurrency: int,
    on_done: Callable[[R], None] | None = None,
) -> list[R]:
    """Run `work` over items with at most `concurrency` in flight; results in input order."""
    semaphore = asyncio.Semaphore(max(1, concurrency))

    async def run_one(item: T) -> R:
        async with semaphore:
            result = await work(item)
        if on_done is not None:
            on_done(result)
        return result

    return list(await asyncio.gather(*(run_one(item) for item in items)))


def collect_output(records: list[Any], events: list[Event], router: LlmRouter) -> BatchOutput:
    entries = router.cache.drain_new() if router.cache is not None else []
    return BatchOutput(
        records=records, events=[*events, *router.drain_events()], cache_entries=entries
    )
