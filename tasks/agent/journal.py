"""An append-only journal of tool calls and model replies, written as each one finishes.

The flow is the only DuckDB writer and gets records when a batch ends, so a killed run would
lose the finished trajectories of its unfinished batches, and the tool calls (and cached model
replies) of its interrupted trajectories. Each one is therefore also appended, one JSON line, to a journal file next to the store; the next run
ingests the journals before it starts, then replays those tool results and serves those
replies from the cache instead of paying for them again.
"""

from __future__ import annotations

import contextlib
import json
import threading
from pathlib import Path
from typing import Any

import orjson

from toucan.llm.replies import LlmReply
from toucan.llm.router import LlmRouter
from toucan.records import LlmCacheEntry, Record, ToolCallRecord, Trajectory

JOURNALED: dict[str, type[Record]] = {
    "tool_calls": ToolCallRecord,
    "llm_cache": LlmCacheEntry,
    "trajectories": Trajectory,
}


def journal_dir(store_path: Path) -> Path:
    return store_path.with_name(store_path.name + ".tool-journal")


class CallJournal:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = path.open("a", encoding="utf-8")

    def append(self, record: Record) -> None:
        entry = {"table": record.__table__, "record": record.model_dump(mode="json")}
        line = orjson.dumps(entry).decode() + "\n"
        with self._lock:
            self._handle.write(line)
            self._handle.flush()  # in the kernel now: survives a SIGKILL of this process

    def close(self) -> None:
        with self._lock:
            self._handle.close()


def read_journal(path: Path) -> list[Record]:
    """Every record in one journal file; a line torn by a kill is skipped."""
    records: list[Record] = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        with contextlib.suppress(ValueError, KeyError, TypeError):
            entry = json.loads(line)
            records.append(JOURNALED[entry["table"]].model_validate(entry["record"]))
    return records


def read_journals(directory: Path) -> tuple[list[Record], list[Path]]:
    """Every record in every journal file of `directory`, and the files read."""
    files = sorted(directory.glob("*.jsonl")) if directory.exists() else []
    return [record for path in files for record in read_journal(path)], files


def open_journal(folder: str | None, run_id: str, batch_id: str) -> CallJournal | None:
    """A batch's crash journal, `<folder>/<run>-<batch>.jsonl`; None without a folder."""
    if folder is None:
        return None
    return CallJournal(Path(folder) / f"{run_id}-{batch_id}.jsonl")


class JournalingTeacher:
    """The router, with each new cached reply also appended to the crash journal."""

    def __init__(self, router: LlmRouter, journal: CallJournal | None) -> None:
        self.router = router
        self.journal = journal
        self.new_entries: list[LlmCacheEntry] = []

    async def complete(
        self, target: str, messages: list[dict[str, Any]], **options: Any
    ) -> LlmReply:
        """As LlmRouter.complete."""
        reply = await self.router.complete(target, messages, **options)
        self.collect()
        return reply

    def collect(self) -> list[LlmCacheEntry]:
        """Take the cache's new entries (journaling them); returns all taken so far."""
        if self.router.cache is not None:
            fresh = self.router.cache.drain_new()
            self.new_entries.extend(fresh)
            for entry in fresh:
                if self.journal is not None:
                    self.journal.append(entry)
        return self.new_entries
