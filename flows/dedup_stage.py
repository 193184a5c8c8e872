"""A dedup pass's new tasks staged on disk, by position in priority order: normalised texts,
blocks, band keys (one file per band) and exact copies, so the pass finds every candidate pair
of the run in one sort per band and reads back any task's text without DuckDB or memory
growing with the run (flows/dedup.py).

Sizes at a million tasks: ~300 MB of texts and 256 MB of keys on disk (next to the store:
/tmp may be memory); in memory the offsets, block numbers and copies, ~20 MB. A pass killed
outright leaves its folder behind: the next pass removes it (`staging_folder`).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import polars as pl

from tasks.dedup import BANDS, DedupItem, band_keys, colliding_pairs, rows_with_repeated_values

READ_BYTES = 1 << 22  # a read of staged texts: 4 MB
FOLDER_PREFIX = "dedup-"
OWNER = "owner"  # the file a live pass holds an flock on, in its folder, for its whole life
OWNER_DRAFT = ".owner-"  # its name until it is locked (`staging_folder`)
TEXTS = "texts"  # the staged texts, one after another (`StagedTasks`)
BAND_FILES = tuple(f"band{band}" for band in range(BANDS))  # each band's keys, int64 per task
# every name a pass writes in its folder: a folder holding anything else is not ours to remove
STAGED_NAMES = frozenset({OWNER, TEXTS, *BAND_FILES})
# a folder without an owner file is either being born (the owner file follows within
# microseconds) or left by a pass of a toucan that did not lock (before this file said so)
UNOWNED_GRACE_S = 600.0


@contextlib.contextmanager
def staging_folder(parent: Path) -> Iterator[Path]:
    """A new `dedup-*` folder in `parent` for this pass, removed on exit; first the folders
    of passes that died (`remove_stale_folders`).

    Liveness is an flock on the folder's `owner` file, held from before the file has its name
    until the folder is gone, rather than the store's writer lock: the folder sits beside the
    store, and another store in the same directory may have a pass running (its own writer),
    while an flock is released by the kernel however its process ends (kill -9 included)."""
    remove_stale_folders(parent)
    folder = Path(tempfile.mkdtemp(prefix=FOLDER_PREFIX, dir=parent))
    owner = tempfile.NamedTemporaryFile("w", dir=folder, prefix=OWNER_DRAFT, delete=False)  # noqa: SIM115
    try:
        fcntl.flock(owner, fcntl.LOCK_EX)  # a fresh file: no one else knows it yet
        owner.write(f"pid {os.getpid()}\n")
        owner.flush()
        os.rename(owner.name, folder / OWNER)  # the lock comes with the inode
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        owner.close()  # only now: while the folder exists, it stays locked


def remove_stale_folders(parent: Path, grace_s: float = UNOWNED_GRACE_S) -> list[Path]:
    """Remove the `dedup-*` folders in `parent` that no live pass owns, and return them: their
    `owner` file's flock is free (the pass died), or they have none, hold only a pass's files
    and were last changed more than `grace_s` ago. A folder gone meanwhile is skipped."""
    removed = []
    for folder in sorted(parent.glob(f"{FOLDER_PREFIX}*")):
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            if folder.is_dir() and _remove_if_stale(folder, grace_s):
                removed.append(folder)
    return removed


def _remove_if_stale(folder: Path, grace_s: float) -> bool:
    if not (folder / OWNER).exists():
        names = [path.name for path in folder.iterdir()]
        if time.time() - folder.stat().st_mtime < grace_s or not all(map(_staged_file, names)):
            return False
        shutil.rmtree(folder, ignore_errors=True)
        return True
    with (folder / OWNER).open() as owner:
        try:
            fcntl.flock(owner, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # its pass is alive
        shutil.rmtree(folder, ignore_errors=True)  # holding the lock: no other cleaner races
    return True


def _staged_file(name: str) -> bool:
    return name in STAGED_NAMES or name.startswith(OWNER_DRAFT)


class StagedTasks:
    """Append chunks in priority order (`add`), then read items and keys by position. The
    files live in `folder` (the caller's temporary directory)."""

    def __init__(self, folder: Path, task_ids: pl.Series) -> None:
        self.folder = folder
        self.task_ids = task_ids
        self.offsets = np.zeros(len(task_ids) + 1, dtype=np.int64)  # texts' byte offsets
        self.block_of = np.zeros(len(task_ids), dtype=np.int32)
        self.blocks: list[tuple[str, ...]] = []
        self._block_numbers: dict[tuple[str, ...], int] = {}
        self._fingerprints = np.zeros((len(task_ids), 2), dtype=np.uint64)
        self._texts = open(folder / TEXTS, "w+b")  # noqa: SIM115 - closed by close()
        self._staged = 0
        self.copies: dict[int, int] = {}
        self.pairs = np.empty(0, dtype=np.int64)

    def close(self) -> None:
        self._texts.close()

    def add(self, items: list[DedupItem]) -> None:
        """The next chunk of tasks, in order: their texts, blocks, keys and fingerprints."""
        first, stop = self._staged, self._staged + len(items)
        encoded = [item.text.encode() for item in items]
        self._texts.write(b"".join(encoded))
        self._texts.flush()  # read back with os.pread
        lengths = np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))
        self.offsets[first + 1 : stop + 1] = self.offsets[first] + np.cumsum(lengths)
        self.block_of[first:stop] = [self._block_number(item.block) for item in items]
        # an exact copy = same block and text: 128 bits of both, so a false copy is ~2**-88
        # likely at a million tasks
        self._fingerprints[first:stop] = np.frombuffer(
            b"".join(
                hashlib.blake2b(
                    b"%d\0%s" % (self.block_of[first + row], text), digest_size=16
                ).digest()
                for row, text in enumerate(encoded)
            ),
            dtype=np.uint64,
        ).reshape(-1, 2)
        keys = band_keys(items)
        for band in range(BANDS):
            with open(self.folder / BAND_FILES[band], "ab") as column:
                keys[:, band].tofile(column)
        self._staged = stop

    def _block_number(self, block: tuple[str, ...]) -> int:
        number = self._block_numbers.setdefault(block, len(self.blocks))
        if number == len(self.blocks):
            self.blocks.append(block)
        return number

    def find_candidates(self, copies: bool) -> None:
        """Once every task is added: `copies` (position -> the position of the first task
        with the same block and text; none if not `copies`) and `pairs`, the candidate
        (later, earlier) positions of every task but the copies (`colliding_pairs`)."""
        self.copies = self._copies() if copies else {}
        distinct = np.setdiff1d(np.arange(self._staged), np.fromiter(self.copies, dtype=np.int64))
        pairs = colliding_pairs(self.band_column(band)[distinct] for band in range(BANDS))
        later, earlier = np.divmod(pairs, np.int64(1) << 32)
        self.pairs = (distinct[later] << 32) | distinct[earlier]

    def _copies(self) -> dict[int, int]:
        firsts: dict[tuple[int, int], int] = {}
        return {
            row: first
            for row in rows_with_repeated_values(self._fingerprints[:, 0]).tolist()
            if (first := firsts.setdefault(tuple(self._fingerprints[row].tolist()), row)) != row
        }

    def band_column(self, band: int, first: int = 0, stop: int | None = None) -> np.ndarray:
        count = (self._staged if stop is None else stop) - first
        return np.fromfile(
            self.folder / BAND_FILES[band], dtype=np.int64, count=count, offset=8 * first
        )

    def keys(self, first: int, stop: int) -> np.ndarray:
        """(stop - first, BANDS) band keys of the tasks at positions [first, stop)."""
        return np.stack([self.band_column(band, first, stop) for band in range(BANDS)], axis=1)

    def items(self, first: int, stop: int) -> list[DedupItem]:
        """The tasks at positions [first, stop), in order: one read of their texts."""
        texts = os.pread(
            self._texts.fileno(),
            int(self.offsets[stop] - self.offsets[first]),
            int(self.offsets[first]),
        )
        ends = (self.offsets[first + 1 : stop + 1] - self.offsets[first]).tolist()
        starts = [0, *ends[:-1]]
        return [
            DedupItem(task_id, self.blocks[block], texts[start:end].decode())
            for task_id, block, start, end in zip(
                self.task_ids.slice(first, stop - first).to_list(),
                self.block_of[first:stop].tolist(),
                starts,
                ends,
                strict=True,
            )
        ]

    def texts_at(self, positions: np.ndarray, read_bytes: int = READ_BYTES) -> list[str]:
        """The texts at ascending `positions`, read in spans of at most `read_bytes` of the file
        (but a longer text), each holding the next positions' texts: a read per text cost
        more than the decision."""
        starts = self.offsets[positions]
        ends = self.offsets[positions + 1]
        texts: list[str] = []
        at = 0
        while at < len(positions):
            stop = max(at + 1, int(np.searchsorted(ends, starts[at] + read_bytes, side="right")))
            base = int(starts[at])
            span = os.pread(self._texts.fileno(), int(ends[stop - 1]) - base, base)
            texts += [
                span[start:end].decode()
                for start, end in zip(
                    (starts[at:stop] - base).tolist(), (ends[at:stop] - base).tolist(), strict=True
                )
            ]
            at = stop
        return texts
