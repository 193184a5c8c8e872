"""A dedup pass's staging folder beside the store (flows/dedup_stage.py): a pass killed outright
leaves it behind, and the next pass removes it, never the folder of a pass still running in
another process (another store's, in the same directory)."""

from __future__ import annotations

import multiprocessing
import os
import signal
from pathlib import Path
from typing import Any

import polars as pl

from flows.dedup import dedup_pending_tasks
from flows.dedup_stage import OWNER, StagedTasks, remove_stale_folders, staging_folder
from tasks.dedup import DedupItem
from tests.synthesize.test_dedup import add_run, corpus
from toucan.store import Store

WAIT_S = 60


def stage_and_wait(parent: str, ready: Any, leave: Any) -> None:
    """In a child process: a pass that stages a few tasks, says where, and waits to be told to
    leave (or to be killed)."""
    with staging_folder(Path(parent)) as folder:
        items = [DedupItem(f"t{n}", ("s",), f"question {n}") for n in range(50)]
        staged = StagedTasks(folder, pl.Series("task_id", [item.task_id for item in items]))
        staged.add(items)
        ready.put(str(folder))
        leave.wait(WAIT_S)
        staged.close()


def test_the_next_pass_removes_a_killed_pass_folder_but_not_a_live_one(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    # an Event each: a condition's notify waits for every sleeper to wake, a killed one never does
    ready, leave, never = context.Queue(), context.Event(), context.Event()
    killed = context.Process(target=stage_and_wait, args=(str(tmp_path), ready, never))
    live = context.Process(target=stage_and_wait, args=(str(tmp_path), ready, leave))
    live.start()
    live_folder = Path(ready.get(timeout=WAIT_S))
    killed.start()  # a pass itself: it leaves the live folder be
    dead_folder = Path(ready.get(timeout=WAIT_S))
    os.kill(killed.pid, signal.SIGKILL)  # type: ignore[arg-type]
    killed.join(WAIT_S)
    assert live_folder.exists()
    assert (dead_folder / "texts").stat().st_size > 0 and (dead_folder / OWNER).exists()

    store = Store(tmp_path / "other.duckdb")
    add_run(store, corpus(40), 0, day=1)
    dedup_pending_tasks(store, 0.9)
    assert not dead_folder.exists()
    assert (live_folder / "texts").exists() and (live_folder / "band31").exists()
    assert sorted(tmp_path.glob("dedup-*")) == [live_folder]  # the pass's own is gone too

    leave.set()
    live.join(WAIT_S)
    assert live.exitcode == 0 and not live_folder.exists()


def test_an_unowned_folder_is_removed_once_old_and_only_if_it_holds_a_pass_files(
    tmp_path: Path,
) -> None:
    """Folders without an owner file: a pass's being born (fresh), one of a toucan that did
    not lock yet (old, staged files only), or someone else's (other files): only the old
    staged one goes."""
    old = tmp_path / "dedup-old"
    fresh = tmp_path / "dedup-fresh"
    foreign = tmp_path / "dedup-notes"
    for folder, names in ((old, ["texts", "band0", "band31"]), (fresh, []), (foreign, ["a.md"])):
        folder.mkdir()
        for name in names:
            (folder / name).write_bytes(b"x")
    (tmp_path / "dedup-file").write_text("not a folder")
    hour_ago = old.stat().st_mtime - 3600
    for folder in (old, foreign):
        os.utime(folder, (hour_ago, hour_ago))
    assert remove_stale_folders(tmp_path, grace_s=600) == [old]
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "dedup-file",
        "dedup-fresh",
        "dedup-notes",
    ]
