"""Collecting events where the work happens, writing them where the writer is.

Units of work (LLM calls, tool calls, items) append Event records to an EventSink; the flow
run drains the sink and writes the batch, so only one process ever writes the store.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from toucan.ids import make_id
from toucan.records import Event, utc_now

# An event of an item that used several servers names them all, joined by this (toucan status
# splits them again and counts the item once for each server).
SERVER_SEPARATOR = ","


def joined_servers(servers: Iterable[str]) -> str | None:
    """The `server` of an event of an item that used these servers (names or ids), in order;
    None for none."""
    return SERVER_SEPARATOR.join(servers) or None


@dataclass
class EventSink:
    run_id: str
    stage: str
    _events: list[Event] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _seq: int = 0

    def record(
        self,
        *,
        kind: str = "item",
        item_id: str | None = None,
        server: str | None = None,
        model: str | None = None,
        served_by: str | None = None,
        status: str = "ok",
        error_class: str | None = None,
        error: str | None = None,
        started_at: datetime | None = None,
        latency_ms: float = 0.0,
        tokens_in: int = 0,
        tokens_out: int = 0,
        cost_usd: float = 0.0,
    ) -> Event:
        with self._lock:
            self._seq += 1
            seq = self._seq
        ended = utc_now()
        started = started_at or ended - timedelta(milliseconds=latency_ms)
        event = Event(
            event_id=make_id("evt", self.run_id, self.stage, kind, item_id, server, model, seq),
            run_id=self.run_id,
            stage=self.stage,
            kind=kind,  # type: ignore[arg-type]
            item_id=item_id,
            server=server,
            model=model,
            served_by=served_by,
            status=status,
            error_class=error_class,
            error=(error or "")[:2000] or None,
            started_at=started,
            ended_at=ended,
            latency_ms=latency_ms,
            tokens_in=tokens_in,
            tokens_out=tokens_out,
            cost_usd=cost_usd,
        )
        with self._lock:
            self._events.append(event)
        return event

    @contextmanager
    def timed(self, **fields: object) -> Iterator[dict[str, object]]:
        """Record one item event around a block; set `status`/`error_class` in the yielded dict."""
        started = utc_now()
        t0 = time.perf_counter()
        outcome: dict[str, object] = {}
        try:
            yield outcome
        except BaseException as exc:
            outcome.setdefault("status", "error")
            outcome.setdefault("error_class", type(exc).__name__)
            outcome.setdefault("error", str(exc))
            raise
        finally:
            self.record(
                started_at=started,
                latency_ms=(time.perf_counter() - t0) * 1000,
                **{**fields, **outcome},  # type: ignore[arg-type]
            )

    def drain(self) -> list[Event]:
        with self._lock:
            drained, self._events = self._events, []
        return drained

    def __len__(self) -> int:
        return len(self._events)
