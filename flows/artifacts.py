"""Prefect artifacts of a stage run: a progress bar that moves while it runs, and tables per
server, per model and of its spend when it ends (the same figures as `toucan status`).

`stage_run` (flows.run_context) wraps every stage in `stage_artifacts(ctx)`, so stages need no code
of their own: the progress bar listens to `toucan.progress.report_progress`, and the tables
are computed from the run's events at the end. Outside a Prefect flow run (the plain async
runner, unit tests, `toucan status`) every Prefect call is skipped with one debug log.

The calls are synchronous (`_sync=True`) because stage flows may be sync or async and the
handler fires from plain logging; each is one small API request, and progress updates are
throttled to one per second.
"""

from __future__ import annotations

import contextvars
import logging
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any
from uuid import UUID

from toucan.config import BudgetConfig
from toucan.progress import ProgressUpdate, listening
from toucan.status import RunStatus, read_run_status

if TYPE_CHECKING:
    from flows.run_context import RunContext

logger = logging.getLogger(__name__)

PROGRESS_EVERY_S = 1.0  # at most one progress update per second: each is an API round trip


def in_flow_run() -> bool:
    """True inside a Prefect flow or task run, where artifacts have somewhere to go."""
    from prefect.context import FlowRunContext, TaskRunContext

    return FlowRunContext.get() is not None or TaskRunContext.get() is not None


def artifact_key(*parts: str) -> str:
    """Prefect keys allow lowercase letters, digits and dashes only."""
    joined = "-".join(parts).lower()
    return re.sub(r"-{2,}", "-", re.sub(r"[^a-z0-9-]", "-", joined)).strip("-")


SERVER_COLUMNS = ("server", "items_done", "items_failed", "items_per_min", "p50_ms", "p95_ms")
TOOL_COLUMNS = ("tool_calls", "tool_errors", "tool_p50_ms", "tool_p95_ms")
MODEL_COLUMNS = ("model", "calls", "failed", "cached", "p50_ms", "p95_ms", "tokens_per_min")


def server_table(status: RunStatus) -> list[dict[str, Any]]:
    """One row per server: items, throughput, latency, tool calls, error classes."""
    return [
        {
            **{column: getattr(s, column) for column in (*SERVER_COLUMNS, *TOOL_COLUMNS)},
            "error_classes": ", ".join(f"{k}:{v}" for k, v in s.error_classes.items()),
        }
        for s in status.servers
    ]


def model_table(status: RunStatus) -> list[dict[str, Any]]:
    """One row per model: calls, failures, cache hits, latency, tokens/min, cost, 429s."""
    return [
        {
            **{column: getattr(m, column) for column in MODEL_COLUMNS},
            "cost_usd": m.cost_usd,
            "rate_limited_429": m.rate_limited,
        }
        for m in status.models
    ]


def spend_table(status: RunStatus) -> list[dict[str, Any]]:
    """One row per model the run paid (cached replies are free and counted apart), and the
    total."""
    rows = [
        {
            "model": m.model,
            "paid_calls": m.calls - m.cached - m.failed,
            "cached_calls": m.cached,
            "spent_usd": m.cost_usd,
        }
        for m in status.models
    ]
    total = {"model": "total", "paid_calls": sum(r["paid_calls"] for r in rows)}
    total |= {"cached_calls": sum(r["cached_calls"] for r in rows), "spent_usd": status.spent_usd}
    return [*rows, total]


def spend_description(status: RunStatus, caps: BudgetConfig) -> str:
    """What the spend table covers, the caps it ran under and whether they stopped it."""
    shown = [f"budget.usd ${caps.usd:.4f}"] if caps.usd is not None else []
    if (stage_cap := caps.per_stage.get(status.stage)) is not None:
        shown.append(f"budget.per_stage.{status.stage} ${stage_cap:.4f}")
    shown += [f"budget.per_deployment.{k} ${v:.4f}" for k, v in caps.per_deployment.items()]
    text = f"Model spend of run {status.run_id} ({status.stage}): ${status.spent_usd:.4f}; "
    text += f"caps: {', '.join(shown) or 'none'}"
    if stopped := status.summary.get("stopped"):
        text += f"; stopped: {stopped}, {status.summary.get('not_started', 0)} items not started"
    return text


def publish_table(rows: list[dict[str, Any]], key: str, description: str) -> UUID | None:
    if not in_flow_run():
        logger.debug("no Prefect flow run: table artifact %s skipped", key)
        return None
    from prefect.artifacts import create_table_artifact

    return create_table_artifact(  # type: ignore[call-arg]
        table=rows or [{"empty": "(no rows)"}], key=key, description=description, _sync=True
    )


def publish_run_tables(
    status: RunStatus, *, prefix: str | None = None, caps: BudgetConfig | None = None
) -> list[UUID]:
    """A table artifact per server, per model and of the spend, keyed `<stage>-servers`,
    `<stage>-models` and `<stage>-spend`."""
    name = prefix or status.stage
    ids = [
        publish_table(
            server_table(status),
            artifact_key(name, "servers"),
            f"Per-server throughput of run {status.run_id} ({status.stage}).",
        ),
        publish_table(
            model_table(status),
            artifact_key(name, "models"),
            f"Per-model calls, tokens/min, cost and 429s of run {status.run_id}.",
        ),
        publish_table(
            spend_table(status),
            artifact_key(name, "spend"),
            spend_description(status, caps or BudgetConfig()),
        ),
    ]
    return [i for i in ids if i is not None]


class ProgressArtifact(logging.Handler):
    """Moves a Prefect progress artifact from `report_progress` records of one stage.

    `emit` only records the share done: it runs on whatever thread reported, often a batch's
    event loop, which must not wait on the API. A daemon thread pushes the latest value at
    most once per second, and once more at the end.
    """

    def __init__(self, stage: str, run_id: str) -> None:
        super().__init__(level=logging.INFO)
        self.stage = stage
        self.run_id = run_id
        self.artifact_id: UUID | None = None
        self.percent = 0.0
        self._pushed = 0.0
        self._stop = threading.Event()
        self._pusher: threading.Thread | None = None

    def open(self) -> None:
        if not in_flow_run():
            logger.debug("no Prefect flow run: progress of %s is not published", self.run_id)
            return
        from prefect.artifacts import create_progress_artifact

        self.artifact_id = create_progress_artifact(  # type: ignore[call-arg]
            progress=0.0,
            key=artifact_key(self.stage, "progress"),
            description=f"{self.stage}: share of items finished (run {self.run_id})",
            _sync=True,
        )
        context = contextvars.copy_context()  # the Prefect settings/client of this flow run
        self._pusher = threading.Thread(
            target=context.run, args=(self._push_periodically,), daemon=True
        )
        self._pusher.start()

    def emit(self, record: logging.LogRecord) -> None:
        update = getattr(record, "progress", None)
        if not isinstance(update, ProgressUpdate) or update.stage != self.stage:
            return
        done = 100.0 if update.total <= 0 else min(100.0, 100.0 * update.done / update.total)
        self.percent = round(done, 2)

    def _push_periodically(self) -> None:
        while not self._stop.wait(PROGRESS_EVERY_S):
            self.push()

    def close(self) -> None:
        self._stop.set()
        if self._pusher is not None:
            self._pusher.join(timeout=10)
        self.push()
        super().close()

    def push(self) -> None:
        percent = self.percent
        if self.artifact_id is None or percent == self._pushed:
            return
        from prefect.artifacts import update_progress_artifact

        try:
            update_progress_artifact(  # type: ignore[call-arg]
                artifact_id=self.artifact_id, progress=percent, _sync=True
            )
            self._pushed = percent
        except Exception:  # a progress bar must never fail the stage
            logger.warning("could not update the progress artifact", exc_info=True)


@contextmanager
def stage_artifacts(ctx: RunContext) -> Iterator[None]:
    """Progress artifact while the stage runs; per-server and per-model tables at the end."""
    handler = ProgressArtifact(ctx.run.stage, ctx.run_id)
    try:
        handler.open()
    except Exception:  # the Prefect API being away must not stop the stage
        logger.warning("could not create the progress artifact", exc_info=True)
    try:
        with listening(handler):  # hear the updates, without echoing them
            yield
    finally:
        handler.close()
        publish_stage_tables(ctx)


def publish_stage_tables(ctx: RunContext) -> None:
    if not in_flow_run():
        return
    try:
        ctx.flush_events()
        status = read_run_status(ctx.store, ctx.run_id)
        if status is not None:
            # the run row gets its summary after this; the tables say how the run ended
            status = status.model_copy(update={"summary": ctx.summary})
            publish_run_tables(status, caps=ctx.settings.budget)
    except Exception:  # the stage's own outcome stands whatever happens to its report
        logger.warning("could not publish the tables of run %s", ctx.run_id, exc_info=True)
