"""How a stage's batches run: as Prefect tasks on the flow's task runner, or on plain asyncio.

Both run at most `parallel` batches at once and hand each output to `write` as it completes,
one write at a time (the flow run is the store's single writer); a batch that raises is
handed to `on_error`, which returns the output standing in for it or raises.
"""

from __future__ import annotations

import asyncio
import inspect
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass
class FanOut:
    """One stage run's batches and what to do with each."""

    stage: str
    batch_fn: Callable[..., Any]
    batches: Sequence[Any]
    parallel: int
    kwargs_for: Callable[[Any], dict[str, Any]]
    write: Callable[[Any], None]
    on_error: Callable[[Any, Exception], Any]


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
        pending = deque(fan_out.batches)
        running: dict[Any, Any] = {}
        while pending or running:
            while pending and len(running) < max(1, fan_out.parallel):
                batch = pending.popleft()
                running[submit(batch, **fan_out.kwargs_for(batch))] = batch
            done = next(iter(as_completed(list(running))))
            batch = running.pop(done)
            try:
                output = done.result()
            except Exception as error:  # the stage decides what a failed batch means
                output = fan_out.on_error(batch, error)
            fan_out.write(output)


class AsyncioExecutor:
    """Batches as asyncio tasks on the caller's loop; writes off the loop, one at a time."""

    async def run(self, fan_out: FanOut) -> None:
        gate = asyncio.Semaphore(max(1, fan_out.parallel))
        writing = asyncio.Lock()

        async def run_one(batch: Any) -> None:
            async with gate:
                try:
                    output = fan_out.batch_fn(batch, **fan_out.kwargs_for(batch))
                    if inspect.isawaitable(output):
                        output = await output
                except Exception as error:  # the stage decides what a failed batch means
                    output = fan_out.on_error(batch, error)
            async with writing:
                await asyncio.to_thread(fan_out.write, output)

        await asyncio.gather(*(run_one(batch) for batch in fan_out.batches))
