"""Per-server and per-model throughput of a run, computed from its `events` rows.

The functions over frames are pure (polars in, records out) so they are tested on seeded
events; `read_run_status` is the one edge that reads the store, read-only, with short
connections so it can run beside a writing flow.

Definitions (the same in `toucan status`, the Prefect artifacts and the tests):
- an item is an `events` row of kind `item`; it is *failed* when its status is `error`,
  *done* otherwise (ok, rejected, cached, skipped all mean "finished, nothing left to do");
- servers are shown by name: an event's `server` holds one server or several joined by ","
  (a multi-server item), each a name or a server id, which the servers table turns into its
  name; a multi-server item counts once for each of its servers;
- items/min of a server = its finished items / the minutes of the stage's wall time (start to
  end, or to now while it runs; None while that is zero), and the same for the whole run;
  tokens/min of a model = (tokens in + out of its llm calls) / the same minutes;
- latency percentiles: of a server's items (each item timed from its start to its end), of its
  tool calls, and of a model's calls (replies served from toucan's cache left out: they took
  no time);
- while a run runs, planned / done / failed come from its `run_progress` row, which moves
  per item (flows/live_progress.py); runs without one count their item events;
- a 429 is an llm call with error_class `RateLimited` or status `rate_limited`;
- a run still `running` whose process is gone is `crashed`: same host, and no process with its
  pid, or one with its pid that started at another time (the system reused the pid). Its clock
  stops at its last event. `toucan status` shows it so, and the next writing run on the store
  records it so (`close_crashed_runs`). A run of another host is left as it is: its process
  cannot be seen from here;
- spend = the cost of the llm calls with status `ok`: a cached reply (status `cached`) costs
  nothing and is counted apart; a failed or unsent call is billed nothing.

Every timestamp here is naive UTC, like the store's (`toucan.records.utc_now`); `naive_utc`
brings an aware one (from a caller, or from psutil) to that form before any subtraction.
"""

from __future__ import annotations

import socket
from datetime import UTC, datetime
from typing import Any

import polars as pl
import psutil
from pydantic import BaseModel, ConfigDict, Field

from toucan.events import SERVER_SEPARATOR
from toucan.records import Event, Run, RunProgress, Server, utc_now
from toucan.store import Store, table_columns

RATE_LIMIT_CLASSES = ("RateLimited", "RateLimitError")
# a process's start time as psutil reads it (from /proc, in clock ticks) and as recorded may
# differ by rounding; a reused pid belongs to a process started seconds or days later
SAME_PROCESS_TOLERANCE_S = 1.0
NO_SERVER = "-"
NO_MODEL = "-"


class ServerStats(BaseModel):
    model_config = ConfigDict(extra="forbid")

    server: str
    items_done: int = 0
    items_failed: int = 0
    items_per_min: float | None = None
    p50_ms: float | None = None
    p95_ms: float | None = None
    tool_calls: int = 0
    tool_errors: int = 0
    tool_p50_ms: float | None = None
    tool_p95_ms: float | None = None
    error_classes: dict[str, int] = Field(default_factory=dict)


class ModelStats(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str
    calls: int = 0
    failed: int = 0
    cached: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    tokens_per_min: float | None = None
    cost_usd: float = 0.0
    rate_limited: int = 0
    p50_ms: float | None = None
    p95_ms: float | None = None


class StageSpend(BaseModel):
    """What one stage paid one deployment, over every run on the store."""

    model_config = ConfigDict(extra="forbid")

    stage: str
    model: str
    paid_calls: int = 0
    cached_calls: int = 0
    spent_usd: float = 0.0


class Progress(BaseModel):
    model_config = ConfigDict(extra="forbid")

    done: int = 0
    failed: int = 0
    planned: int | None = None  # known when the stage announced its work (summary["planned"])

    @property
    def finished(self) -> int:
        return self.done + self.failed

    @property
    def fraction(self) -> float | None:
        if not self.planned:
            return None
        return min(1.0, self.finished / self.planned)


class RunStatus(BaseModel):
    model_config = ConfigDict(extra="forbid")

    run_id: str
    stage: str
    status: str
    started_at: datetime
    finished_at: datetime | None = None
    elapsed_s: float
    progress: Progress
    items_per_min: float | None = None  # finished items over the wall time
    servers: list[ServerStats] = Field(default_factory=list)
    models: list[ModelStats] = Field(default_factory=list)
    spent_usd: float = 0.0  # this run, so far: the calls of its written batches
    summary: dict[str, Any] = Field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        payload = self.model_dump(mode="json")
        payload["progress"]["fraction"] = self.progress.fraction
        return payload


# -- pure functions over frames --------------------------------------------------------------


def empty_events_frame() -> pl.DataFrame:
    """An events frame with the right columns and no rows."""
    return events_frame([])


def events_frame(events: list[Event]) -> pl.DataFrame:
    """Events records as a frame with the store's column types (for tests and in-memory use)."""
    columns = table_columns(Event)
    dtypes = {
        "BIGINT": pl.Int64,
        "DOUBLE": pl.Float64,
        "TIMESTAMP": pl.Datetime("us"),
        "BOOLEAN": pl.Boolean,
    }
    schema = {name: dtypes.get(kind, pl.Utf8) for name, kind in columns.items()}
    rows = [e.model_dump() for e in events]
    return pl.DataFrame(rows, schema=schema, orient="row") if rows else pl.DataFrame(schema=schema)


def _per_minute(count: float, wall_s: float | None) -> float | None:
    if not wall_s or wall_s <= 0:
        return None
    return round(count / (wall_s / 60.0), 3)


def events_span_s(events: pl.DataFrame) -> float | None:
    """Seconds from the first event's start to the last one's end: the wall time of a run
    known only by its events."""
    if events.is_empty():
        return None
    start, end = events.get_column("started_at").min(), events.get_column("ended_at").max()
    if start is None or end is None:
        return None
    return (end - start).total_seconds()  # type: ignore[operator]


def by_server_name(events: pl.DataFrame, names: dict[str, str] | None = None) -> pl.DataFrame:
    """One row per (event, server) with the server as its name: a multi-server event ("a,b")
    becomes one row per server, ids become names (`names`: server id -> name; a value not in
    it is kept), an event without a server gets NO_SERVER."""
    split = events.with_columns(
        pl.col("server").fill_null(NO_SERVER).str.split(SERVER_SEPARATOR).alias("server")
    ).explode("server")
    cleaned = pl.col("server").str.strip_chars()
    split = split.with_columns(
        pl.when(cleaned == "").then(pl.lit(NO_SERVER)).otherwise(cleaned).alias("server")
    )
    if names:
        split = split.with_columns(pl.col("server").replace(names))
    return split


def _quantile(values: pl.Series, q: float) -> float | None:
    if values.len() == 0:
        return None
    result = values.quantile(q, interpolation="linear")
    return round(float(result), 1) if result is not None else None


def _error_classes(frame: pl.DataFrame) -> dict[str, int]:
    counted = (
        frame.filter(pl.col("error_class").is_not_null())
        .group_by("error_class")
        .len()
        .sort(["len", "error_class"], descending=[True, False])
    )
    return {row["error_class"]: int(row["len"]) for row in counted.iter_rows(named=True)}


def summarize_servers(
    events: pl.DataFrame, wall_s: float | None = None, names: dict[str, str] | None = None
) -> list[ServerStats]:
    """One row per server seen in the events, by name, busiest first. `wall_s`: the stage's
    wall time in seconds (default: the span of the events); `names`: server id -> name."""
    if events.is_empty():
        return []
    wall_s = events_span_s(events) if wall_s is None else wall_s
    events = by_server_name(events, names)
    stats = []
    for server in events.get_column("server").unique().to_list():
        mine = events.filter(pl.col("server") == server)
        items = mine.filter(pl.col("kind") == "item")
        tools = mine.filter(pl.col("kind") == "tool_call")
        if items.is_empty() and tools.is_empty():
            continue  # e.g. model calls that name no server
        failed = items.filter(pl.col("status") == "error").height
        stats.append(
            ServerStats(
                server=server,
                items_done=items.height - failed,
                items_failed=failed,
                items_per_min=_per_minute(items.height, wall_s),
                p50_ms=_quantile(items.get_column("latency_ms"), 0.5),
                p95_ms=_quantile(items.get_column("latency_ms"), 0.95),
                tool_calls=tools.height,
                tool_errors=tools.filter(pl.col("status") == "error").height,
                tool_p50_ms=_quantile(tools.get_column("latency_ms"), 0.5),
                tool_p95_ms=_quantile(tools.get_column("latency_ms"), 0.95),
                error_classes=_error_classes(mine),
            )
        )
    return sorted(stats, key=lambda s: (-(s.items_done + s.items_failed), s.server))


def summarize_models(events: pl.DataFrame, wall_s: float | None = None) -> list[ModelStats]:
    """One row per model that was called, most called first. `wall_s`: the stage's wall time
    in seconds (default: the span of the events)."""
    calls = events.filter(pl.col("kind") == "llm_call") if not events.is_empty() else events
    if calls.is_empty():
        return []
    wall_s = events_span_s(events) if wall_s is None else wall_s
    calls = calls.with_columns(pl.col("model").fill_null(NO_MODEL))
    stats = []
    for model in calls.get_column("model").unique().to_list():
        mine = calls.filter(pl.col("model") == model)
        tokens_in = int(mine.get_column("tokens_in").sum())
        tokens_out = int(mine.get_column("tokens_out").sum())
        limited = mine.filter(
            pl.col("error_class").is_in(RATE_LIMIT_CLASSES) | (pl.col("status") == "rate_limited")
        ).height
        timed = mine.filter(pl.col("status") != "cached").get_column("latency_ms")
        stats.append(
            ModelStats(
                model=model,
                calls=mine.height,
                failed=mine.filter(pl.col("status").is_in(["error", "rate_limited"])).height,
                cached=mine.filter(pl.col("status") == "cached").height,
                tokens_in=tokens_in,
                tokens_out=tokens_out,
                tokens_per_min=_per_minute(tokens_in + tokens_out, wall_s),
                cost_usd=round(float(mine.get_column("cost_usd").sum()), 6),
                rate_limited=limited,
                p50_ms=_quantile(timed, 0.5),
                p95_ms=_quantile(timed, 0.95),
            )
        )
    return sorted(stats, key=lambda s: (-s.calls, s.model))


def measure_progress(
    events: pl.DataFrame, planned: int | None = None, live: RunProgress | None = None
) -> Progress:
    """Planned / done / failed of a run: from its live row when it has one, else counted
    from its item events (`planned` then from its summary)."""
    if live is not None:
        return Progress(done=live.finished - live.failed, failed=live.failed, planned=live.planned)
    if events.is_empty():
        return Progress(planned=planned)
    items = events.filter(pl.col("kind") == "item")
    failed = items.filter(pl.col("status") == "error").height
    return Progress(done=items.height - failed, failed=failed, planned=planned)


def naive_utc(moment: datetime) -> datetime:
    """`moment` as naive UTC (an aware one converted, a naive one taken as UTC already)."""
    if moment.tzinfo is None:
        return moment
    return moment.astimezone(UTC).replace(tzinfo=None)


def measure_spend(events: pl.DataFrame) -> float:
    """Dollars of the answered model calls (module docstring: cached replies are free)."""
    if events.is_empty():
        return 0.0
    paid = events.filter((pl.col("kind") == "llm_call") & (pl.col("status") == "ok"))
    return round(float(paid.get_column("cost_usd").sum()), 6)


def build_run_status(
    run: Run,
    events: pl.DataFrame,
    *,
    now: datetime | None = None,
    live: RunProgress | None = None,
    server_names: dict[str, str] | None = None,
) -> RunStatus:
    """Everything `toucan status` and the artifacts show about one run (`live`: its
    `run_progress` row; `server_names`: server id -> name)."""
    started = naive_utc(run.started_at)
    end = naive_utc(run.finished_at or now or utc_now())
    planned = run.summary.get("planned")
    elapsed_s = round(max(0.0, (end - started).total_seconds()), 3)
    progress = measure_progress(events, planned if isinstance(planned, int) else None, live)
    return RunStatus(
        run_id=run.run_id,
        stage=run.stage,
        status=run.status,
        started_at=started,
        finished_at=naive_utc(run.finished_at) if run.finished_at else None,
        elapsed_s=elapsed_s,
        progress=progress,
        items_per_min=_per_minute(progress.finished, elapsed_s),
        servers=summarize_servers(events, elapsed_s, server_names),
        models=summarize_models(events, elapsed_s),
        spent_usd=measure_spend(events),
        summary=run.summary,
    )


# -- the store edge ---------------------------------------------------------------------------


def this_host() -> str:
    return socket.gethostname()


def process_started_at(pid: int) -> datetime | None:
    """When process `pid` started (naive UTC), or None when there is no such process."""
    try:
        started = psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None
    return naive_utc(datetime.fromtimestamp(started, UTC))


def process_alive(run: Run, host: str | None = None) -> bool | None:
    """Whether the process that runs `run` is alive: False when it is gone (or its pid now
    belongs to a process that started at another time), None when this host cannot tell (a run
    of another host, or no pid recorded). Rows written before the host was recorded are taken
    as this host's."""
    if run.pid is None or (run.host is not None and run.host != (host or this_host())):
        return None
    started = process_started_at(run.pid)
    if started is None:
        return False
    if run.process_started_at is None:
        return True
    recorded = naive_utc(run.process_started_at)
    return abs((started - recorded).total_seconds()) <= SAME_PROCESS_TOLERANCE_S


def last_event_at(store: Store, run_id: str) -> datetime | None:
    """When the run's last recorded event ended: where a crashed run's clock stops."""
    if not store.path.exists() or not store.count(Event):
        return None
    row = store.query("SELECT max(ended_at) FROM events WHERE run_id = ?", [run_id])
    return naive_utc(row[0][0]) if row and row[0][0] is not None else None


def as_seen(store: Store, run: Run) -> Run:
    """The run as it stands: a `running` run whose process is gone becomes `crashed`, its
    clock stopped at its last event (its start when it recorded none)."""
    if run.status != "running" or process_alive(run) is not False:
        return run
    stopped = last_event_at(store, run.run_id) or naive_utc(run.started_at)
    return run.model_copy(update={"status": "crashed", "finished_at": stopped})


def list_runs(store: Store, limit: int = 20) -> list[Run]:
    """Most recent runs first, as they stand (`as_seen`)."""
    runs = sorted(store.select(Run), key=lambda r: naive_utc(r.started_at), reverse=True)
    return [as_seen(store, run) for run in runs[:limit]]


def pick_run(store: Store, run_id: str | None = None) -> Run | None:
    """The asked-for run, else the newest one still running, else the newest one; as they
    stand, so a crashed run is never taken for the current one."""
    if run_id:
        found = store.select(Run, "run_id = ?", [run_id])
        return as_seen(store, found[0]) if found else None
    runs = list_runs(store, limit=1000)
    running = [r for r in runs if r.status == "running"]
    return (running or runs or [None])[0]


def close_crashed_runs(store: Store) -> list[Run]:
    """Record as `crashed` the runs on this store still marked running whose process is gone
    (a writing run calls this when it starts: it holds the writer lock, so none of them is
    writing). Returns the rows it closed."""
    closed = [
        seen
        for run in store.select(Run, "status = 'running'")
        if (seen := as_seen(store, run)).status == "crashed"
    ]
    store.upsert(closed)
    return closed


def read_run_events(store: Store, run_id: str) -> pl.DataFrame:
    if not store.path.exists() or not store.count(Event):
        return empty_events_frame()
    return store.frame("SELECT * FROM events WHERE run_id = ?", [run_id])


def read_store_spend(store: Store) -> list[StageSpend]:
    """Spend per stage and deployment over every run on the store (module docstring for what
    counts), by stage then model."""
    if not store.path.exists() or not store.count(Event):
        return []
    rows = store.query(
        "SELECT stage, coalesce(model, ?), count(*) FILTER (WHERE status = 'ok'), "
        "count(*) FILTER (WHERE status = 'cached'), "
        "coalesce(sum(cost_usd) FILTER (WHERE status = 'ok'), 0) "
        "FROM events WHERE kind = 'llm_call' GROUP BY ALL ORDER BY ALL",
        [NO_MODEL],
    )
    return [
        StageSpend(
            stage=stage, model=model, paid_calls=paid, cached_calls=cached, spent_usd=round(usd, 6)
        )
        for stage, model, paid, cached, usd in rows
    ]


def read_live_progress(store: Store, run_id: str) -> RunProgress | None:
    found = store.select(RunProgress, "run_id = ?", [run_id])
    return found[0] if found else None


def read_server_names(store: Store) -> dict[str, str]:
    """server id -> name, for every server the store knows."""
    if not store.path.exists() or not store.count(Server):
        return {}
    return dict(store.query("SELECT server_id, name FROM servers"))  # type: ignore[arg-type]


def read_run_status(store: Store, run_id: str | None = None) -> RunStatus | None:
    """The status of one run (`pick_run`), read in one go: a writer elsewhere waits meanwhile."""
    with store.reading():
        run = pick_run(store, run_id)
        if run is None:
            return None
        events = read_run_events(store, run.run_id)
        live = read_live_progress(store, run.run_id)
        names = read_server_names(store)
    return build_run_status(run, events, live=live, server_names=names)
