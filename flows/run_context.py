"""A stage run: its `runs` row, the writer lock, and the event sink, for the runner to use.

The runner (flows/runner.py) wraps every stage in `stage_run(...)` (`reading_run` for a stage
that only reads). The row says what ran with which parameters, in which process (host, pid,
process start: a killed run is told apart from a live one, toucan/status.py) and how it ended;
`toucan status` and resume read it. A writing run first closes the rows of runs that died
without recording an end (`crashed`).
"""

from __future__ import annotations

import gc
import math
import os
import secrets
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from flows.artifacts import stage_artifacts
from flows.durable import ReplyWriter
from tasks.llm_batch import PARALLEL_BATCHES, ProgressCounter, chunked
from toucan.config import Settings
from toucan.events import EventSink
from toucan.ids import make_id
from toucan.records import Record, Run, utc_now
from toucan.status import close_crashed_runs, process_started_at, this_host
from toucan.store import Store

if TYPE_CHECKING:
    from flows.spend import ModelGuards

FLUSH_EVERY = 200  # events buffered before a write; a crash loses at most this many
# A run allocates millions of short-lived objects (messages, records, events); with Python's
# default thresholds (700, 10, 10) the cyclic collector took ~12% of the event loop at 256
# items in flight (measured: 11.5 s -> 10.1 s for 2,048 synthesize items).
RUN_GC_THRESHOLDS = (50_000, 50, 1_000)


BatchT = TypeVar("BatchT")
T = TypeVar("T")
U = TypeVar("U")


@dataclass(frozen=True)
class Stream(Generic[T]):
    """`count` values made on demand, afresh on each iteration (`make()`), never all held:
    a plan or selection too large to keep in memory (flows/queries.py). `len()` is the count
    known before the first value is made."""

    count: int
    make: Callable[[], Iterable[T]]

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[T]:
        return iter(self.make())

    def batched(self, size: int) -> Stream[list[T]]:
        """This stream's values in lists of `size` (the last one shorter), each list made when
        it is reached."""
        return Stream(math.ceil(self.count / size), lambda: chunked(self, size))

    def map(self, make: Callable[[T], U]) -> Stream[U]:
        """A stream of `make(value)` for each of this stream's values, made as they come."""
        return Stream(self.count, lambda: (make(value) for value in self))


@dataclass
class StagePlan(Generic[BatchT]):
    """What a stage will do in this run. `batches` is a list, or a Stream the executors
    consume as batches finish (flows/executors.py): its count is known, its batches are made
    when a lane is free."""

    planned: int = 0  # items this run will do
    already_done: int = 0  # items finished by earlier runs
    batches: Sequence[BatchT] | Stream[BatchT] = field(default_factory=list)
    parallel: int = PARALLEL_BATCHES  # batches running at once
    per_batch: int = 1  # items in flight inside one batch
    largest_batch: int = 0  # items in the largest batch, when known without making them

    @property
    def running(self) -> int:
        """Batches that really run at once: what the deployments' limits are shared by."""
        return max(1, min(self.parallel, len(self.batches)))


class StageTally:
    """Counters of one run (flat memory, whatever the item count), fed by the write hook:
    items finished and failed, counts by status and reason, and any named count a stage adds
    (`add("by_mode", mode)`, or a table cell `add("per_teacher", (teacher, "kept"))`)."""

    def __init__(self) -> None:
        self.finished = 0
        self.failed = 0
        self._counts: defaultdict[str, Counter[Any]] = defaultdict(Counter)

    def item(self, status: str, reason: str | None = None) -> None:
        """One finished item; `error` counts as failed (and by its reason)."""
        self.finished += 1
        self.failed += status == "error"
        self.add("status", status)
        if reason:
            self.add("reason", reason)
        if status == "error":
            self.add("failed_reason", reason or "unknown")

    def add(self, name: str, key: Any = "", amount: float = 1) -> None:
        self._counts[name][key] += amount

    def counts(self, name: str) -> dict[Any, Any]:
        return dict(self._counts[name])

    def total(self, name: str) -> Any:
        return sum(self._counts[name].values())

    def add_cells(self, name: str, row: str, cells: dict[str, float]) -> None:
        """Several cells of one table row at once (`table(name)[row]`)."""
        for column, amount in cells.items():
            self.add(name, (row, column), amount)

    def sample(self, name: str, key: str, value: float) -> None:
        """One value of a mean (`means` reads them back)."""
        self.add(f"{name}.sum", key, value)
        self.add(f"{name}.n", key)

    def means(self, name: str, keys: tuple[str, ...]) -> dict[str, float]:
        """The mean of each key's samples, rounded to 3 places; keys without one left out."""
        sums, counts = self._counts[f"{name}.sum"], self._counts[f"{name}.n"]
        return {key: round(sums[key] / counts[key], 3) for key in keys if counts[key]}

    def table(self, name: str) -> dict[str, dict[str, Any]]:
        """Cells added under (row, column) keys, as {row: {column: amount}}."""
        rows: dict[str, dict[str, Any]] = {}
        for (row, column), amount in self._counts[name].items():
            rows.setdefault(row, {})[column] = amount
        return rows


@dataclass
class RunContext:
    """One run of one stage: its row, the store it writes, its settings, the events and
    counters it gathers and the summary its row keeps; the runner adds the stage's plan and,
    for a stage that calls models, its guards (flows/spend.py) and whether it sends provider
    batch jobs, and once the fan-out starts
    the embedded model's url, the progress counter and the writer of the run's model replies
    (flows/durable.py)."""

    run: Run
    store: Store
    settings: Settings
    events: EventSink
    summary: dict[str, Any] = field(default_factory=dict)
    tally: StageTally = field(default_factory=StageTally)
    plan: StagePlan[Any] = field(default_factory=StagePlan)
    local_base_url: str | None = None
    progress: ProgressCounter | None = None
    replies: ReplyWriter | None = None
    guards: ModelGuards | None = None
    batch_jobs: bool = False  # its model requests go as provider batch jobs (flows/runner.py)

    @property
    def run_id(self) -> str:
        return self.run.run_id

    def write(self, records: list[Record], *, upsert: bool = False) -> int:
        """Write a batch of stage output plus the pending events, in one transaction each."""
        written = self.store.upsert(records) if upsert else self.store.insert(records)
        self.flush_events()
        return written

    def flush_events(self, *, force: bool = True) -> None:
        if force or len(self.events) >= FLUSH_EVERY:
            self.store.insert(self.events.drain())


def new_run(settings: Settings, stage: str, params: dict[str, Any] | None = None) -> Run:
    """The `runs` row of a run starting now in this process."""
    run_id = make_id("run", stage, utc_now().isoformat(), os.getpid(), secrets.token_hex(4))
    return Run(
        run_id=run_id,
        stage=stage,
        profile=settings.profile,
        params=params or {},
        config_hash=settings.fingerprint(),
        pid=os.getpid(),
        host=this_host(),
        process_started_at=process_started_at(os.getpid()),
        prefect_flow_run_id=_current_flow_run_id(),
    )


@contextmanager
def reading_run(
    store: Store, settings: Settings, stage: str, params: dict[str, Any] | None = None
) -> Iterator[RunContext]:
    """A stage that only reads the store (the report): no `runs` row and no writer lock, so it
    runs beside a writing stage."""
    run = new_run(settings, stage, params)
    yield RunContext(run=run, store=store, settings=settings, events=EventSink(run.run_id, stage))


@contextmanager
def stage_run(
    store: Store, settings: Settings, stage: str, params: dict[str, Any] | None = None
) -> Iterator[RunContext]:
    """A writing stage's run: the writer lock, one held connection, the `runs` row (status
    completed / failed / interrupted, summary from `ctx.summary`) and the Prefect artifacts."""
    run = new_run(settings, stage, params)
    run_id = run.run_id
    with store.writer_lock(run_id), store.holding(), _fewer_collections():
        close_crashed_runs(store)  # the writer lock is ours: no run marked running is writing
        store.upsert([run])
        ctx = RunContext(run=run, store=store, settings=settings, events=EventSink(run_id, stage))
        status = "failed"
        try:
            with stage_artifacts(ctx):  # Prefect progress bar + per-server/model tables
                yield ctx
            status = "completed"
        except BaseException as stop:
            # Ctrl-C, SIGTERM (Prefect raises its own TerminationSignal for it), cancellation
            if not isinstance(stop, Exception):
                status = "interrupted"
            raise
        finally:
            ctx.flush_events()
            store.upsert(
                [
                    run.model_copy(
                        update={"status": status, "finished_at": utc_now(), "summary": ctx.summary}
                    )
                ]
            )


@contextmanager
def _fewer_collections() -> Iterator[None]:
    previous = gc.get_threshold()
    gc.set_threshold(*RUN_GC_THRESHOLDS)
    try:
        yield
    finally:
        gc.set_threshold(*previous)


def _current_flow_run_id() -> str | None:
    try:
        from prefect.runtime import flow_run

        return str(flow_run.id) if flow_run.id else None
    except Exception:  # outside Prefect there is no flow run; that is fine
        return None
