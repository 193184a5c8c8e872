"""Where export and report write, and how they write it so a reader never sees half of it.

- **Per run, never clobbered.** Without an explicit output, a run writes under the store's
  folder: `<store dir>/exports/<run id>/` (the dataset) or `exports/<run id>.html` (the
  report), with `exports/latest` (a relative symlink, or a `LATEST` file holding the folder's
  name where symlinks cannot be made) and `exports/latest.html` pointing at the newest. Paths
  are absolute, resolved where the flow runs, so a deployment's worker writes next to the store
  whatever directory it was started in. An explicit output that exists is refused unless
  overwriting (`refuse_existing`).
- **Whole or absent.** Output is built in a hidden sibling, `.<name>.<pid>.partial`, and
  renamed into place when complete (`building`): a killed or failed run leaves no folder a
  trainer would take for a whole dataset. A partial whose process is gone is stale and the next
  run removes it (`remove_stale_partials`); the pid in the name tells a live writer's apart.

Plain filesystem functions: no store, no Prefect.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import psutil

EXPORTS = "exports"
LATEST = "latest"  # the symlink to the newest export folder
LATEST_FILE = "LATEST"  # the newest export folder's name, where no symlink can be made
LATEST_REPORT = "latest.html"
PARTIAL = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.partial$")


def exports_dir(store_path: Path) -> Path:
    """`<store dir>/exports`, absolute."""
    return store_path.resolve().parent / EXPORTS


def partial_of(final: Path) -> Path:
    """The hidden sibling this process builds `final` in."""
    return final.with_name(f".{final.name}.{os.getpid()}.partial")


def refuse_existing(final: Path, *, overwrite: bool) -> None:
    """FileExistsError for an existing non-empty folder (or a file) at `final`, unless
    `overwrite`: an explicit output is never replaced by surprise."""
    if overwrite or not final.exists():
        return
    if final.is_dir() and not any(final.iterdir()):
        return
    raise FileExistsError(f"{final} exists and is not empty; pass overwrite (--overwrite)")


def remove_stale_partials(folder: Path) -> list[Path]:
    """Remove the partial outputs in `folder` whose writing process is gone; returns them."""
    if not folder.is_dir():
        return []
    removed = []
    for entry in folder.iterdir():
        match = PARTIAL.match(entry.name)
        if match and not psutil.pid_exists(int(match["pid"])):
            discard(entry)
            removed.append(entry)
    return removed


def start_partial(final: Path, *, folder: bool) -> Path:
    """The partial path to build `final` in, cleared (a fresh empty folder when `folder`);
    stale partials beside it are removed first."""
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(final.parent)
    partial = partial_of(final)
    discard(partial)
    if folder:
        partial.mkdir()
    return partial


def finish_partial(partial: Path, final: Path) -> None:
    """Put the complete `partial` in `final`'s place (an existing `final` is replaced: check
    with `refuse_existing` before building)."""
    _put_in_place(partial, final)


@contextlib.contextmanager
def building(final: Path, *, folder: bool) -> Iterator[Path]:
    """Yield the partial path to write `final` into; when the block ends without error put it
    in place, else remove it."""
    partial = start_partial(final, folder=folder)
    try:
        yield partial
    except BaseException:
        discard(partial)
        raise
    finish_partial(partial, final)


def _put_in_place(partial: Path, final: Path) -> None:
    """rename(2) replaces a file, or an empty folder, atomically; a full folder is first moved
    aside (one more rename), so `final` is missing for an instant, never half written."""
    if final.is_dir() and not final.is_symlink() and any(final.iterdir()):
        aside = final.with_name(f".{final.name}.old.{os.getpid()}.partial")
        os.replace(final, aside)
        os.replace(partial, final)
        discard(aside)
        return
    os.replace(partial, final)


def point_latest(link: Path, target: Path) -> Path:
    """Make `link` point at `target` (same folder): a relative symlink swapped in atomically.
    Where symlinks cannot be made: for a folder, `LATEST` beside it holds the target's name;
    for a file, a copy. Returns what was written."""
    staging = link.with_name(f".{link.name}.{os.getpid()}.partial")
    discard(staging)
    try:
        staging.symlink_to(target.name)
    except OSError:
        if target.is_dir():
            marker = link.with_name(LATEST_FILE)
            marker.write_text(target.name + "\n", encoding="utf-8")
            return marker
        shutil.copyfile(target, staging)
    os.replace(staging, link)
    return link


def read_latest(exports: Path) -> Path | None:
    """The newest export folder under `exports` (from `latest` or `LATEST`), if it exists."""
    link = exports / LATEST
    if link.is_symlink() or link.is_dir():
        found = link.resolve()
    elif (exports / LATEST_FILE).is_file():
        found = exports / (exports / LATEST_FILE).read_text(encoding="utf-8").strip()
    else:
        return None
    return found if found.is_dir() else None


def discard(path: Path) -> None:
    """Remove a file, symlink or folder tree at `path`, if there is one."""
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)
