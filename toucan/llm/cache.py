"""Response cache: a successful reply is never paid for twice.

Keyed by (deployment, LiteLLM model string, rendered prompt hash, parameters hash). A cache
over a store (`LlmCache.load`) keeps in memory only a sorted array of the 64-bit prefixes of the
stored keys (8 bytes a row: 0.8 MB per 100k rows) and fetches a stored reply from DuckDB when
a request's prefix is among them, so a stage run's memory does not grow with the `llm_cache`
table (issue 14: loading every row cost ~35 MB per 10k rows). New entries are only collected
here and written by the caller (the flow is the single writer): `cache.drain_new()`, as soon as
they come when the caller waits on `wait_new` (flows/durable.py); once the caller says they
are stored (`stored`), their replies leave memory too and are fetched back like the others.

A cache pickled into another process (a batch on a Dask worker) is a copy: it keeps the key
prefixes and fetches stored replies from the store's file like the owner (waiting while the flow
run holds it, toucan/store.py), answers from the owner's replies not stored yet, collects the
replies of its own calls and hands them back in the batch's output (`BatchOutput.cache_entries`),
which the flow run writes; the owner's entries not yet written stay with the owner. A `fork`
is the same copy inside this process, sharing the prefix array: an agent batch (trajectories,
multi-turn) works on one, so its output carries exactly the entries of its own calls.
"""

from __future__ import annotations

import bisect
import copy
import heapq
import threading
from array import array
from typing import TYPE_CHECKING, Any

from toucan.ids import content_hash, make_id
from toucan.llm.replies import LlmReply
from toucan.records import LlmCacheEntry

if TYPE_CHECKING:  # the store pulls in DuckDB and polars; a router that only calls needs neither
    from toucan.store import Store

KEY_KIND = "llm"  # cache keys are make_id("llm", ...): "llm_" + 20 hex digits
PREFIX_HEX = 16  # the first 64 bits of a key's digest, its in-memory stand-in
PREFIX_CHUNK = 65_536  # prefixes moved from a polars frame to the array this many at a time
# this run's stored prefixes wait in a set (~100 bytes each) until this many, then merge into
# the sorted array (8 bytes each): a run of 1M items would otherwise hold ~135 MB of set
MERGE_WRITTEN_AT = 65_536
# the same prefix, computed by DuckDB over the stored keys (a key of another shape gives NULL)
PREFIX_SQL = f"TRY_CAST('0x' || substr(cache_key, {len(KEY_KIND) + 2}, {PREFIX_HEX}) AS UBIGINT)"


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
    cache_key = make_id(KEY_KIND, deployment, model, prompt_hash, params_hash)
    return CacheKey((cache_key, prompt_hash, params_hash))


def key_prefix(cache_key: str) -> int | None:
    """The first 64 bits of a cache key's digest as an unsigned int (what PREFIX_SQL computes
    in DuckDB); None for a key that is not a make_cache_key id."""
    digits = cache_key[len(KEY_KIND) + 1 : len(KEY_KIND) + 1 + PREFIX_HEX]
    try:
        return int(digits, 16) if len(digits) == PREFIX_HEX else None
    except ValueError:
        return None


def stored_prefixes(store: Store, models: list[str] | None = None) -> array[int]:
    """Sorted prefixes of the keys in the store's `llm_cache` (only rows of these LiteLLM
    model strings when given): 8 bytes a row, read in one query and copied in chunks so the
    transient Python ints stay a chunk's worth."""
    prefixes: array[int] = array("Q")
    if not store.count(LlmCacheEntry):
        return prefixes
    where, params = model_filter(models)
    frame = store.frame(
        f"SELECT p FROM (SELECT {PREFIX_SQL} AS p FROM llm_cache{where}) "
        "WHERE p IS NOT NULL ORDER BY p",
        params,
    )
    column = frame.get_column("p")
    for start in range(0, len(column), PREFIX_CHUNK):
        prefixes.extend(column.slice(start, PREFIX_CHUNK).to_list())
    return prefixes


def model_filter(models: list[str] | None) -> tuple[str, list[str]]:
    """(` WHERE model IN (...)` or "", its parameters)."""
    if not models:
        return "", []
    return f" WHERE model IN ({', '.join('?' for _ in models)})", list(models)


class LlmCache:
    """The replies a run can reuse: given entries and this run's new ones in memory, plus
    (over a store) the stored ones, looked up by key in DuckDB when their prefix says so."""

    def __init__(
        self,
        entries: list[LlmCacheEntry] | None = None,
        run_id: str | None = None,
        *,
        store: Store | None = None,
        models: list[str] | None = None,
    ):
        self.run_id = run_id
        self.store = store
        self.models = list(models) if models else None
        # the given entries and this run's new ones until the caller says they are stored
        self._replies = {entry.cache_key: entry.reply for entry in entries or []}
        self._stored: array[int] = (
            stored_prefixes(store, self.models) if store is not None else array("Q")
        )
        self._written: set[int] = set()  # prefixes of this run's entries stored since
        self._new: list[LlmCacheEntry] = []
        self._lock = threading.Lock()
        self._fresh = threading.Event()  # set by `put`, for a writer waiting on `wait_new`
        self.hits = 0
        self.misses = 0
        self.fetches = 0  # lookups that went to the store

    @classmethod
    def load(
        cls, store: Store, run_id: str | None = None, models: list[str] | None = None
    ) -> LlmCache:
        """A cache over the store's replies (optionally only those of some LiteLLM model
        strings); reads the key prefixes now, a reply only when a request may hit it."""
        return cls(run_id=run_id, store=store, models=models)

    def _may_be_stored(self, key: str) -> bool:
        """Whether the store may hold this key (a 64-bit prefix match: a false positive
        costs one lookup, with odds about rows / 2**64)."""
        if self.store is None or (prefix := key_prefix(key)) is None:
            return False
        if prefix in self._written:
            return True
        at = bisect.bisect_left(self._stored, prefix)
        return at < len(self._stored) and self._stored[at] == prefix

    def _fetch(self, key: str) -> dict[str, Any] | None:
        # no model filter: the key names its model, and a key of this run's is any model's
        assert self.store is not None
        rows = self.store.select(LlmCacheEntry, "cache_key = ?", [key])
        return rows[0].reply if rows else None

    def __getstate__(self) -> dict[str, Any]:
        """A copy for another process: the key prefixes, the replies in memory, none of the
        owner's unwritten entries (the owner writes those), no lock or event (neither
        pickles)."""
        with self._lock:
            state = {**vars(self), "_replies": dict(self._replies), "_new": []}
            state["_written"] = set(self._written)
        del state["_lock"], state["_fresh"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        vars(self).update(state)
        self._lock = threading.Lock()
        self._fresh = threading.Event()

    def fork(self) -> LlmCache:
        """The copy a batch in another process gets (`__getstate__`), made in this one: same
        store, same stored prefixes (the array shared, not copied: neither cache changes it in
        place), the replies in memory, and new entries of its own for its caller to drain."""
        return copy.copy(self)

    def get(self, key: CacheKey) -> LlmReply | None:
        with self._lock:
            stored = self._replies.get(key.key)
            look_up = stored is None and self._may_be_stored(key.key)
        if look_up:
            stored = self._fetch(key.key)  # outside the lock: other items go on meanwhile
        with self._lock:
            self.fetches += look_up
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

    def stored(self, entries: list[LlmCacheEntry]) -> None:
        """These drained entries are in this cache's store now: their replies leave memory
        (fetched back on a hit), only their 64-bit prefixes stay. Without a store, or for a
        key that is not a cache key, the reply stays in memory."""
        if self.store is None:
            return
        with self._lock:
            for entry in entries:
                if (prefix := key_prefix(entry.cache_key)) is not None:
                    self._written.add(prefix)
                    self._replies.pop(entry.cache_key, None)
            if len(self._written) >= MERGE_WRITTEN_AT:
                self._merge_written()

    def _merge_written(self) -> None:
        """Move the set's prefixes into the sorted array, streaming: the transient Python
        ints stay the set's worth (~0.3 s per 1M prefixes already in the array)."""
        merged = array("Q", heapq.merge(self._stored, sorted(self._written)))
        self._stored, self._written = merged, set()

    def __len__(self) -> int:
        """Replies this cache can serve: the stored ones (by prefix) and those in memory."""
        return len(self._stored) + len(self._written) + len(self._replies)
