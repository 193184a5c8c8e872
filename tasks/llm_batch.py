"""What every LLM stage's batch shares: the lane the runner hands it (deployments, items in
flight, reply cache, progress), the router it builds, the batch sizes, and the records + events
+ cache entries it hands back to the runner (the single writer)."""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from toucan.config import ModelsConfig
from toucan.events import EventSink
from toucan.llm.batch_gate import GatedRouter
from toucan.llm.batch_ledger import BatchLedger
from toucan.llm.breaker import ModelBreaker
from toucan.llm.budget import Budget
from toucan.llm.cache import LlmCache
from toucan.llm.router import LlmRouter
from toucan.progress import report_progress
from toucan.records import Event, LlmCacheEntry, Record, utc_now

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
    """Items done across the batches of one stage run, reported as they finish. Pickled into
    another process (a batch on a Dask worker) it is a copy counting on from where the run
    stood when the batch was submitted; the flow run catches up (`catch_up`) as batches end."""

    def __init__(self, stage: str, total: int, done: int = 0) -> None:
        self.stage = stage
        self.total = total
        self.done = done
        self.failed = 0
        self._lock = threading.Lock()

    def advance(self, item: str | None = None, status: str | None = None) -> None:
        with self._lock:
            self.done += 1
            self.failed += status == "error"
            done, failed = self.done, self.failed
        report_progress(self.stage, done, self.total, item, status, failed)

    def catch_up(self, done: int, failed: int) -> None:
        """Raise the count to `done` items (`failed` of them errors) and report it, when the
        batches that finished them counted on copies in other processes; a count already
        there (batches in this process) is left as it is."""
        with self._lock:
            if done <= self.done:
                return
            self.done, self.failed = done, max(self.failed, failed)
            failed = self.failed
        report_progress(self.stage, done, self.total, failed=failed)

    def __getstate__(self) -> dict[str, Any]:
        with self._lock:
            state = dict(vars(self))
        del state["_lock"]  # a thread lock does not pickle
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        vars(self).update(state)
        self._lock = threading.Lock()


class LlmLane(BaseModel):
    """What the runner hands each LLM batch: the deployments (their limits already shared by the
    batches running at once), items in flight in this batch, the run, the run's reply cache,
    where the embedded model listens (None: the deployments' own providers), the progress
    counter of the stage, and the run's budget and model breaker (shared by every batch;
    None: uncapped, and a breaker of the batch's own)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    models: ModelsConfig
    run_id: str
    concurrency: int = 1
    local_base_url: str | None = None
    cache: LlmCache | None = None
    progress: ProgressCounter | None = None
    budget: Budget | None = None
    breaker: ModelBreaker | None = None
    # set when the runner chose provider batch jobs for this stage run (flows/runner.py)
    batch_ledger: BatchLedger | None = None


class ItemEvent(BaseModel):
    """The `item` event of one finished unit of work, and its progress label."""

    model_config = ConfigDict(frozen=True)

    item_id: str
    status: str
    label: str
    error_class: str | None = None
    server: str | None = None
    model: str | None = None
    served_by: str | None = None
    error: str | None = None
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0


def rating_event(item_id: str, rating: Any) -> ItemEvent:
    """A judge's verdict as an event: ok (kept), rejected or error, labelled by its reason
    (`rating` is a TaskRating or a TrajectoryRating)."""
    status = "error" if rating.status == "error" else ("ok" if rating.keep else "rejected")
    fields = {"error_class": rating.reason, "model": rating.judge, "served_by": rating.served_by}
    return ItemEvent(item_id=item_id, status=status, label=rating.reason or "kept", **fields)


def batch_size(items: int) -> int:
    """Items per batch for a run of `items`: one batch per lane when the work allows, within
    BATCH_ITEMS..MAX_BATCH_ITEMS. Each batch ends with a tail in which its share of the items
    in flight runs dry; fewer, even batches leave less of that idle capacity."""
    return min(MAX_BATCH_ITEMS, max(BATCH_ITEMS, math.ceil(items / PARALLEL_BATCHES)))


def in_flight_per_batch(batches: int, concurrency: int) -> int:
    """Items in flight inside one batch, so that the batches running at once hold
    `concurrency` items in flight together."""
    running = max(1, min(PARALLEL_BATCHES, batches))
    return max(1, math.ceil(concurrency / running))


def chunked(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Consecutive lists of `size` items (the last may hold fewer), made as they are asked for."""
    chunk: list[T] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def split_batches(items: Sequence[T], concurrency: int) -> tuple[list[list[T]], int]:
    """(batches, items in flight per batch) so that the batches running at once hold
    `concurrency` items in flight together."""
    batches = list(chunked(items, batch_size(len(items))))
    return batches, in_flight_per_batch(len(batches), concurrency)


def open_router(lane: LlmLane, stage: str) -> LlmRouter:
    """A router for this batch's event loop (routers never cross loops, threads or processes)
    over the run's shared guards; a GatedRouter, sending provider batch jobs, when the lane
    has a batch ledger (toucan/llm/batch_gate.py)."""
    shared: dict[str, Any] = {
        "local_base_url": lane.local_base_url,
        "cache": lane.cache,
        "rate_limit_patience_s": lane.models.rate_limit_patience_s,
        "budget": lane.budget,
        "breaker": lane.breaker,
    }
    if lane.batch_ledger is not None:
        return GatedRouter(
            lane.models, ledger=lane.batch_ledger, run_id=lane.run_id, stage=stage, **shared
        )
    return LlmRouter(lane.models, **shared)


async def run_bounded(
    items: Sequence[T], work: Callable[[T], Awaitable[R]], concurrency: int
) -> list[R]:
    """Run `work` over items with at most `concurrency` in flight; results in input order."""
    semaphore = asyncio.Semaphore(max(1, concurrency))

    async def run_one(item: T) -> R:
        async with semaphore:
            return await work(item)

    return list(await asyncio.gather(*(run_one(item) for item in items)))


def collect_output(records: list[Any], events: list[Event], router: LlmRouter) -> BatchOutput:
    entries = router.cache.drain_new() if router.cache is not None else []
    return BatchOutput(
        records=records, events=[*events, *router.drain_events()], cache_entries=entries
    )


async def run_llm_batch(
    items: Sequence[T],
    lane: LlmLane,
    stage: str,
    work: Callable[[T, LlmRouter], Awaitable[list[R]]],
    describe: Callable[[list[R]], ItemEvent],
    servers_of: Callable[[T], str | None] | None = None,
) -> BatchOutput:
    """The body every LLM batch shares: one router on this event loop, at most
    `lane.concurrency` items in flight, an `item` event and a progress step per finished
    item (`describe` reads them off its rows; the event is timed from the item's start to its
    end, and names the item's servers, `servers_of(item)`, when `describe` names none), then
    rows + events + new cache entries. `work` turns one item into its rows (one or more
    records) and never raises."""
    router = open_router(lane, stage)
    events = EventSink(lane.run_id, stage)
    # a gated router holds each unit's request until every unit is held: all run at once
    concurrency = lane.concurrency
    unit_of_work: Callable[[], contextlib.AbstractContextManager[None]] = contextlib.nullcontext
    if isinstance(router, GatedRouter):
        router.expect(len(items))
        concurrency, unit_of_work = len(items), router.unit_of_work

    async def one(item: T) -> list[R]:
        started, clock = utc_now(), time.perf_counter()
        with unit_of_work():
            rows = await work(item, router)
        event = describe(rows)
        server = event.server or (servers_of(item) if servers_of is not None else None)
        events.record(
            **event.model_dump(exclude={"label", "server"}),
            server=server,
            started_at=started,
            latency_ms=(time.perf_counter() - clock) * 1000,
        )
        if lane.progress is not None:
            lane.progress.advance(event.label, event.status)
        return rows

    try:
        results = await run_bounded(items, one, concurrency)
    finally:
        await router.aclose()  # its HTTP session belongs to this loop, which may outlive us
    records: list[Record] = [row for rows in results for row in rows]  # type: ignore[misc]
    return collect_output(records, events.drain(), router)
