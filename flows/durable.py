"""Answered model calls are stored the moment they return, so a crash repeats at most the calls
in flight.

An LLM stage's rows reach the store when their batch ends (512-1,024 items); before this, so
did the batch's replies, and a kill mid-batch threw away every paid reply of the batches in
flight (issue 15, fault 3). Now a writer thread in the flow process waits on the run's one reply
cache (toucan/llm/cache.py) and stores each new entry as it comes, through the store's held
connection (`Store.holding` serializes its uses), so the flow run stays the one process that
writes the file. Rows are still written when a batch ends: a rerun re-parses the stored replies
of the items a kill cut short, but pays for none of them again.

Batches that run in other processes (a Dask or Ray task runner) would work on their own copy of
the cache: the thread would see none of their replies, which would reach the store with their
batch (`BatchOutput.cache_entries`), so a crash there still loses the replies of the batches in
flight. The lane's cache and progress counter pickle without their locks for that
(tests/ops/test_cluster.py runs filter-tasks on worker processes).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator

from toucan.llm.cache import LlmCache
from toucan.records import LlmCacheEntry
from toucan.store import Store

logger = logging.getLogger(__name__)

STOP_CHECK_S = 0.1  # an idle writer looks this often whether the run asked it to stop


class ReplyWriter:
    """The run's reply cache, opened on first use, and the thread that stores its new entries.

    Once stored, an entry's reply leaves memory (`LlmCache.stored`): the run holds the 64-bit
    prefixes of the stored keys and the replies not stored yet, not the `llm_cache` table.

    A stage that never asks for the cache (no model calls) starts no thread and loads nothing.
    A failed write stops the thread; `close` then writes what is left from the caller's thread,
    where a StoreError fails the run like any other write.
    """

    def __init__(self, store: Store, run_id: str) -> None:
        self.store = store
        self.run_id = run_id
        self.written = 0  # entries stored by this writer (rows new to the store)
        self._cache: LlmCache | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()  # one write at a time: the thread's, then close's

    def cache(self) -> LlmCache:
        """The run's one reply cache: every batch of the run shares it, and its new entries
        are stored from now on."""
        if self._cache is None:
            self._cache = LlmCache.load(self.store, self.run_id)
            self._thread = threading.Thread(
                target=self._store_as_they_come, name="reply-writer", daemon=True
            )
            self._thread.start()
        return self._cache

    def close(self) -> None:
        """Stop the thread and store the entries it has not stored yet."""
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        self._write()

    def _store_as_they_come(self) -> None:
        assert self._cache is not None
        while not self._stop.is_set():
            if not self._cache.wait_new(STOP_CHECK_S):
                continue
            try:
                self._write()
            except Exception:  # the thread's edge: `close` retries and raises from the run
                logger.exception("storing model replies as they come failed; stored at the end")
                return

    def _write(self) -> None:
        assert self._cache is not None
        with self._lock:
            entries = self._cache.drain_new()
            try:
                self.written += self.store.insert(entries)
            except BaseException:
                self._cache.requeue(entries)  # kept for the next write (or the batch's own)
                raise
            self._cache.stored(entries)

    def stored(self, entries: list[LlmCacheEntry]) -> None:
        """Entries of the cache that a batch's write stored (flows/writes.py): their replies
        leave memory, as those stored here do."""
        if self._cache is not None:
            self._cache.stored(entries)


@contextlib.contextmanager
def durable_replies(store: Store, run_id: str) -> Iterator[ReplyWriter]:
    """A ReplyWriter for one stage run, closed (everything stored) when the block ends. When the
    block raises, its error is the one that propagates; a failed last write is only logged."""
    writer = ReplyWriter(store, run_id)
    try:
        yield writer
    except BaseException:
        try:
            writer.close()
        except Exception:  # the run's own error says more; this one goes to the log
            logger.exception("model replies of the failed run could not be stored")
        raise
    writer.close()
