"""How a stage's batches run: as Prefect tasks on the flow's task runner, or on plain asyncio.

Both run at most `parallel` batches at once and hand each output to `write` as it completes,
one write at a time (the flow run is the store's single writer). They take the next batch
only when a lane is free, so a stream of batches (flows/run_context.py Stream) is made as it
is consumed and never held whole; a batch that raises is
handed to `on_error`, which returns the output standing in for it or raises. Once `stopped`
says so (the run's model guards tripped: flows/spend.py) no further batch starts: each is
handed to `skip` instead, and the batches already running finish.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any


@dataclass
class FanOut:
    """One stage run's batches and what to do with each."""

    stage: str
    batch_fn: Callable[..., Any]
    batches: Iterable[Any]  # a list, or a Stream made batch by batch
    parallel: int
    kwargs_for: Callable[[Any], dict[str, Any]]
    write: Callable[[Any], None]
    on_error: Callable[[Any, Exception], Any]
    stopped: Callable[[], bool] = lambda: False
    skip: Callable[[Any], None] = lambda batch: None


_BATCH_TASKS: dict[tuple[str, Callable[..., Any]], Any] = {}


def batch_task(stage: str, batch_fn: Callable[..., Any]) -> Any:
    """The stage's Prefect task, `<stage>-batch`, defined once per process. No Prefect retries:
    a batch turns its items' failures into error rows, and the next run retries what is
    retryable (toucan.errors.RETRYABLE_REASONS); no result persistence or caching: the flow writes."""
    key = (stage, batch_fn)
    if key not in _BATCH_TASKS:
        from prefect import task
        from prefect.cache_policies import NONE

        name = f"{stage.replace('_', '-')}-batch"
        _BATCH_TASKS[key] = task(
            batch_fn, name=name, retries=0, persist_result=False, cache_policy=NONE
        )
    return _BATCH_TASKS[key]


class PrefectExecutor:
    """Batches as Prefect tasks on the running flow's task runner (threads, Dask or Ray)."""

    def run(self, fan_out: FanOut) -> None:
        from prefect.futures import as_completed

        submit = batch_task(fan_out.stage, fan_out.batch_fn).submit
        pending = iter(fan_out.batches)
        running: dict[Any, Any] = {}
        while True:
            while len(running) < max(1, fan_out.parallel):
                batch = next(pending, _END)
                if batch is _END:
                    break
                if fan_out.stopped():
                    fan_out.skip(batch)
                    continue
                running[submit(batch, **fan_out.kwargs_for(batch))] = batch
            if not running:
                break
            done = next(iter(as_completed(list(running))))
            batch = running.pop(done)
            try:
                output = done.result()
            except Exception as error:  # the stage decides what a failed batch means
                output = fan_out.on_error(batch, error)
            fan_out.write(output)


class AsyncioExecutor:
    """Batches as asyncio tasks on the caller's loop: `parallel` lanes, each taking the next
    batch when its last one has run; batches are made and written off the loop (a stream
    reads the store), writes one at a time."""

    async def run(self, fan_out: FanOut) -> None:
        pending = iter(fan_out.batches)
        taking, writing = asyncio.Lock(), asyncio.Lock()

        async def write(output: Any) -> None:
            async with writing:
                await asyncio.to_thread(fan_out.write, output)

        async def lane() -> None:
            written: asyncio.Task[None] | None = None  # this lane's last output, being written
            while True:
                async with taking:  # a generator is advanced by one thread at a time
                    batch = await asyncio.to_thread(next, pending, _END)
                if batch is _END:
                    break
                if fan_out.stopped():
                    fan_out.skip(batch)
                    continue
                try:
                    output = fan_out.batch_fn(batch, **fan_out.kwargs_for(batch))
                    if inspect.isawaitable(output):
                        output = await output
                except Exception as error:  # the stage decides what a failed batch means
                    output = fan_out.on_error(batch, error)
                if written is not None:
                    await written
                # written while the lane runs its next batch
                written = asyncio.create_task(write(output))
            if written is not None:
                await written

        await asyncio.gather(*(lane() for _ in range(max(1, fan_out.parallel))))


_END = object()  # no batch left
