"""Export and report outputs per run, under the store: a nightly schedule with no parameters
writes a new folder each night the store grew, nothing when it did not, never a half-written
folder, and never over an explicit folder unless told to."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from flows.registry import export_flow, report_flow
from flows.runner import run_stage_async
from tasks.export_formats import FORMATS
from tasks.output_dirs import LATEST_FILE, read_latest
from tests.export.seeding import (
    WEATHER_TOOLS,
    export_to,
    make_trajectory,
    seed_pipeline,
    tool_use_messages,
    trajectory_rating,
)
from toucan.config import load_settings
from toucan.store import Store


@pytest.fixture
def settings():
    return load_settings(profile="local")


@pytest.fixture
def store(tmp_path: Path) -> Store:
    seeded = Store(tmp_path / "data" / "toucan.duckdb")
    seed_pipeline(seeded)
    return seeded


def grow(store: Store, name: str) -> None:
    """One more kept trajectory: what a night of the pipeline adds."""
    messages = tool_use_messages(f"Weather in {name}?", {"city": name}, "sunny")
    row = make_trajectory(f"traj_{name}", "task_orig", "original", messages, WEATHER_TOOLS)
    store.insert([row, trajectory_rating(row.trajectory_id)])


def exported_rows(folder: Path) -> int:
    return sum(pq.read_table(p).num_rows for p in (folder / "data").glob("*.parquet"))


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait(timeout=60)
    return child.pid


def test_each_export_gets_its_own_folder_under_the_store_and_latest_points_at_the_newest(
    store: Store, settings
) -> None:
    exports = store.path.parent / "exports"
    first = export_to(store, settings, None, ["parquet"])  # type: ignore[arg-type]
    first_dir = Path(first.out_dir)
    assert first_dir.is_absolute() and first_dir.parent == exports.resolve()
    assert first_dir.name.startswith("run_") and exported_rows(first_dir) == first.rows == 4
    assert read_latest(exports) == first_dir and (exports / "latest").is_symlink()

    grow(store, "Lyon")
    second = export_to(store, settings, None, ["parquet"])  # type: ignore[arg-type]
    second_dir = Path(second.out_dir)
    assert second_dir != first_dir and exported_rows(second_dir) == second.rows == 5
    assert exported_rows(first_dir) == 4  # last night's folder is untouched
    assert read_latest(exports) == second_dir

    third = export_to(store, settings, None, ["parquet"])  # type: ignore[arg-type]
    assert third.message.startswith("nothing_new") and Path(third.out_dir) == second_dir
    assert sorted(p.name for p in exports.iterdir() if not p.name.startswith(".")) == sorted(
        [first_dir.name, second_dir.name, "latest"]
    )
    other_format = export_to(store, settings, None, ["jsonl"])  # type: ignore[arg-type]
    assert not other_format.message and Path(other_format.out_dir) != second_dir


def test_reports_are_written_per_run_with_latest_html_pointing_at_the_newest(
    store: Store, settings
) -> None:
    exports = store.path.parent / "exports"
    first = asyncio.run(run_stage_async("report", settings, store))
    second = asyncio.run(run_stage_async("report", settings, store))
    pages = [Path(first.out), Path(second.out)]
    assert pages[0] != pages[1] and all(p.parent == exports.resolve() for p in pages)
    assert all(p.suffix == ".html" and p.stat().st_size > 100_000 for p in pages)
    assert (exports / "latest.html").resolve() == pages[1]
    assert not [p for p in exports.iterdir() if p.name.endswith(".partial")]


def test_a_failed_export_leaves_no_folder_and_a_stale_partial_is_removed(
    store: Store, settings, monkeypatch
) -> None:
    exports = store.path.parent / "exports"
    stale = exports / f".run_killed.{dead_pid()}.partial"
    (stale / "data").mkdir(parents=True)
    (stale / "data" / "train-00000-of-00001.parquet").write_bytes(b"PAR1 truncated")

    def disk_full(rows, out_dir: Path, shard_rows: int) -> list[Path]:
        (out_dir / "half.jsonl").write_text("{")
        raise OSError(28, "No space left on device")

    monkeypatch.setitem(FORMATS, "disk_full", disk_full)
    with pytest.raises(OSError):
        export_to(store, settings, None, ["parquet", "disk_full"])  # type: ignore[arg-type]
    assert list(exports.iterdir()) == []  # the stale partial went, the failed one too
    assert read_latest(exports) is None

    done = export_to(store, settings, None, ["parquet"])  # type: ignore[arg-type]
    assert read_latest(exports) == Path(done.out_dir)


def test_an_explicit_folder_is_refused_when_it_exists_unless_overwrite(
    store: Store, settings, tmp_path: Path
) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        export_to(store, settings, out, ["parquet"])
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    summary = export_to(store, settings, out, ["parquet"], overwrite=True)
    assert Path(summary.out_dir) == out.resolve() and not (out / "keep.txt").exists()
    again = export_to(store, settings, out, ["parquet"], overwrite=True)  # explicit: rewritten
    assert not again.message and exported_rows(out) == 4
    assert not (store.path.parent / "exports").exists()


def test_a_latest_file_stands_in_where_there_is_no_symlink(tmp_path: Path) -> None:
    exports = tmp_path / "exports"
    (exports / "run_b").mkdir(parents=True)
    assert read_latest(exports) is None
    (exports / LATEST_FILE).write_text("run_b\n")
    assert read_latest(exports) == exports / "run_b"
    (exports / LATEST_FILE).write_text("run_gone\n")
    assert read_latest(exports) is None


@pytest.mark.usefixtures("prefect_harness")
def test_the_nightly_schedule_with_no_parameters_works_every_night(
    store: Store, monkeypatch, tmp_path: Path
) -> None:
    """The deployment's schedule passes `{}`: the store comes from the environment, the
    folders from the store, whatever directory the worker runs in."""
    monkeypatch.setenv("TOUCAN_STORE", str(store.path))
    monkeypatch.setenv("TOUCAN_PROFILE", "local")
    elsewhere = tmp_path / "worker-cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    exports = store.path.parent / "exports"

    night_one = export_flow(return_state=True)
    grow(store, "Nice")
    night_two = export_flow(return_state=True)
    night_three = export_flow(return_state=True)
    page = report_flow()

    assert [s.name for s in (night_one, night_two, night_three)] == ["Completed"] * 3
    one, two, three = (s.result() for s in (night_one, night_two, night_three))
    assert (one.rows, two.rows) == (4, 5) and one.out_dir != two.out_dir
    assert three.message.startswith("nothing_new") and three.out_dir == two.out_dir
    folders = [p for p in exports.iterdir() if p.is_dir() and not p.is_symlink()]
    assert sorted(str(p) for p in folders) == sorted([one.out_dir, two.out_dir])
    assert Path(page.out).parent == exports.resolve()
    assert os.listdir(elsewhere) == []  # nothing lands where the worker happened to start
