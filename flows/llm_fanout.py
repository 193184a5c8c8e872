"""What the LLM stage flows share: the model endpoint, resumable work selection, the batch
fan-out (Prefect futures or plain asyncio), and writing a batch's output as the single writer."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

from prefect.futures import PrefectFuture, as_completed

from tasks.llm_batch import PARALLEL_BATCHES, BatchOutput
from toucan.config import Settings
from toucan.records import Record
from toucan.runs import RunContext
from toucan.store import Store

# Error reasons worth another attempt on the next run; anything else is a final answer
# (a rejection, an unparseable or out-of-range reply the cache would only repeat).
RETRYABLE_REASONS = (
    "rate_limited",
    "model_timeout",
    "model_server_error",
    "llm_error",
    "internal_error",
)


@contextlib.contextmanager
def model_endpoint(settings: Settings) -> Iterator[str | None]:
    """The embedded model server's base url for profile `local` (started and stopped here),
    else None: the deployments' own providers are used."""
    if not settings.models.route_to_local:
        yield None
        return
    from toucan.llm.local_server import LocalModelServer

    with LocalModelServer(settings.models.local) as server:
        yield server.base_url


def unfinished_ids(store: Store, model: type[Record], ids: Sequence[str]) -> set[str]:
    """Ids with no row yet, or whose row is an error worth retrying (the resume anti-join)."""
    ids = list(ids)
    existing = store.existing_ids(model, ids)
    key = model.__key__[0]
    retry: set[str] = set()
    if existing:
        marks = ", ".join("?" for _ in RETRYABLE_REASONS)
        rows = store.query(
            f'SELECT "{key}" FROM {model.__table__} WHERE list_contains(?, "{key}") '
            f"AND status = 'error' AND reason IN ({marks})",
            [sorted(existing), *RETRYABLE_REASONS],
        )
        retry = {row[0] for row in rows}
    return (set(ids) - existing) | retry


def write_output(ctx: RunContext, output: BatchOutput) -> int:
    """Cache entries first (a crash after them still spares the next run the calls), then
    rows (upsert: a retried error row is replaced), then events."""
    ctx.store.insert(output.cache_entries)
    written = ctx.store.upsert(output.records)
    ctx.store.insert(output.events)
    ctx.flush_events()
    return written


def fan_out(
    batch_task: Any,
    batches: Sequence[Any],
    parallel: int,
    write: Callable[[BatchOutput], None],
    **kwargs: Any,
) -> None:
    """Submit batches as Prefect tasks, at most `parallel` at once; write each as it ends."""
    pending = deque(batches)
    running: list[PrefectFuture[BatchOutput]] = []
    while pending or running:
        while pending and len(running) < parallel:
            running.append(batch_task.submit(pending.popleft(), **kwargs))
        done = next(iter(as_completed(running)))
        running.remove(done)
        write(done.result())


async def fan_out_async(
    batch_fn: Callable[..., Any],
    batches: Sequence[Any],
    parallel: int,
    write: Callable[[BatchOutput], None],
    **kwargs: Any,
) -> None:
    """The same fan-out without Prefect: batches as asyncio tasks on this loop."""
    semaphore = asyncio.Semaphore(max(1, parallel))
    writing = asyncio.Lock()  # one write at a time, off the loop the other batches run on

    async def run_one(batch: Any) -> None:
        async with semaphore:
            output = await batch_fn(batch, **kwargs)
        async with writing:
            await asyncio.to_thread(write, output)

    await asyncio.gather(*(run_one(batch) for batch in batches))


class BatchedJob(Protocol):
    """What a stage's job object offers the runners below: its batches, the keyword arguments
    of its batch task, and how to store one batch's output."""

    batches: Sequence[Any]

    def batch_kwargs(self, local_base_url: str | None) -> dict[str, Any]: ...

    def write(self, output: BatchOutput) -> None: ...


def run_job(job: BatchedJob, batch_task: Any, settings: Settings) -> None:
    """Run the job's batches as Prefect tasks, with the embedded model up while they run."""
    if not job.batches:
        return
    with model_endpoint(settings) as base_url:
        fan_out(batch_task, job.batches, PARALLEL_BATCHES, job.write, **job.batch_kwargs(base_url))


async def run_job_async(job: BatchedJob, batch_task: Any, settings: Settings) -> None:
    """The same on plain asyncio, calling the Prefect task's undecorated function."""
    if not job.batches:
        return
    with model_endpoint(settings) as base_url:
        await fan_out_async(
            batch_task.fn, job.batches, PARALLEL_BATCHES, job.write, **job.batch_kwargs(base_url)
        )
