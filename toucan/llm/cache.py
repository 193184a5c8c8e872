"""Response cache: a successful reply is never paid for twice.

Keyed by (deployment, LiteLLM model string, rendered prompt hash, parameters hash). Lookups are
served from memory, filled from the store once per stage (`LlmCache.load`); new entries are only
collected here and written by the caller (the flow is the single writer): `cache.drain_new()`,
as soon as they come when the caller waits on `wait_new` (flows/durable.py).

A cache pickled into another process (a batch on a Dask worker) is a copy: it answers from
every reply the owner knew when the batch was submitted, collects the replies of its own
calls, and hands them back in the batch's output (`BatchOutput.cache_entries`), which the flow
run writes; the owner's entries not yet written stay with the owner.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from toucan.ids import content_hash, make_id
from toucan.llm.replies import LlmReply
from toucan.records import LlmCacheEntry

if TYPE_CHECKING:  # the store pulls in DuckDB and polars; a router that only calls needs neither
    from toucan.store import Store


class CacheKey(tuple[str, str, str]):
    """(cache_key, prompt_hash, params_hash)."""

    @property
    def key(self) -> str:
        return self[0]


def make_cache_key(
    deployment: str,
    model: str,
    messages: list[dict[str, Any]],
    tools: list[dict[str, Any]] | None,
    response_format: dict[str, Any] | None,
    params: dict[str, Any],
) -> CacheKey:
    prompt_hash = content_hash({"messages": messages, "tools": tools or []})
    params_hash = content_hash({"params": params, "response_format": response_format}, 32)
    cache_key = make_id("llm", deployment, model, prompt_hash, params_hash)
    return CacheKey((cache_key, prompt_hash, params_hash))


class LlmCache:
    """In-memory view of the `llm_cache` table plus the entries this run added."""

    def __init__(self, entries: list[LlmCacheEntry] | None = None, run_id: str | None = None):
        self.run_id = run_id
        self._replies = {entry.cache_key: entry.reply for entry in entries or []}
        self._new: list[LlmCacheEntry] = []
        self._lock = threading.Lock()
        self._fresh = threading.Event()  # set by `put`, for a writer waiting on `wait_new`
        self.hits = 0
        self.misses = 0

    @classmethod
    def load(
        cls, store: Store, run_id: str | None = None, models: list[str] | None = None
    ) -> LlmCache:
        """Pre-load the stored replies (optionally only those of some LiteLLM model strings)."""
        if models:
            marks = ", ".join("?" for _ in models)
            return cls(store.select(LlmCacheEntry, f"model IN ({marks})", models), run_id)
        return cls(store.select(LlmCacheEntry), run_id)

    def __getstate__(self) -> dict[str, Any]:
        """A copy for another process: the known replies, none of the owner's unwritten
        entries (the owner writes those), no lock or event (neither pickles)."""
        with self._lock:
            state = {**vars(self), "_replies": dict(self._replies), "_new": []}
        del state["_lock"], state["_fresh"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        vars(self).update(state)
        self._lock = threading.Lock()
        self._fresh = threading.Event()

    def get(self, key: CacheKey) -> LlmReply | None:
        with self._lock:
            stored = self._replies.get(key.key)
            if stored is None:
                self.misses += 1
                return None
            self.hits += 1
        reply = LlmReply.model_validate(stored)
        return reply.model_copy(update={"cached": True, "latency_ms": 0.0, "cost_usd": 0.0})

    def put(self, key: CacheKey, reply: LlmReply) -> None:
        stored = reply.model_dump(mode="json")
        entry = LlmCacheEntry(
            cache_key=key.key,
            model=reply.model,
            prompt_hash=key[1],
            params_hash=key[2],
            reply=stored,
            run_id=self.run_id,
        )
        with self._lock:
            if key.key in self._replies:
                return
            self._replies[key.key] = stored
            self._new.append(entry)
        self._fresh.set()

    def wait_new(self, timeout: float) -> bool:
        """Block until an entry was added since the last call (True) or `timeout` seconds
        passed (False); the entries themselves are taken with `drain_new`."""
        fresh = self._fresh.wait(timeout)
        self._fresh.clear()  # before the caller drains: an entry added after is not missed
        return fresh

    def drain_new(self) -> list[LlmCacheEntry]:
        """Entries added since the last drain, for the caller to `store.insert`."""
        with self._lock:
            drained, self._new = self._new, []
        return drained

    def requeue(self, entries: list[LlmCacheEntry]) -> None:
        """Give back drained entries whose write failed: the next drain returns them again."""
        if not entries:
            return
        with self._lock:
            self._new[:0] = entries
        self._fresh.set()

    def __len__(self) -> int:
        return len(self._replies)
