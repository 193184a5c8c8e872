"""A memory timeline of a benchmark's child process (bench_scale.py, BENCH_SCALE_SAMPLE=1):
RSS (anonymous / file-backed), glibc's heap (mallinfo2), DuckDB's bundled jemalloc
(`duckdb_je_mallctl`), `duckdb_memory()` of the held store connection and the Python allocator's
block count, every SAMPLE_S; and where our threads are while DuckDB holds more than SPIKE_MB;
and a process's own peak RSS (`peak_rss_mb`). BENCH_SCALE_CLOSES=DIR also traces each close of
the store (`MemorySampler._trace_closes`: DuckDB's checkpoint log, the close's memory).
Diagnosis only: it reads toucan.store's held connections (a private detail) and glibc."""

from __future__ import annotations

import collections
import contextlib
import ctypes
import functools
import os
import sys
import time
import typing
from pathlib import Path
from threading import get_ident as threading_get_ident

ROOT = Path(__file__).resolve().parents[1]
SPIKE_MB = 60  # the sampler notes where our code is while DuckDB has more than this allocated


def peak_rss_mb() -> float:
    """This process's peak RSS (VmHWM, MB). Not `ru_maxrss`: a child started by subprocess
    (vfork, then exec) or a fork inherits in it the parent's peak, so a benchmark whose parent
    prepared a large store reported the parent's peak as the child's."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2**10
    return float("nan")


@functools.cache
def _mallctl() -> typing.Any:
    import _duckdb  # DuckDB allocates through its own jemalloc (duckdb_je_*)

    return ctypes.CDLL(_duckdb.__file__).duckdb_je_mallctl


def jemalloc_mb() -> dict[str, float]:
    """DuckDB's bundled jemalloc (`duckdb_je_mallctl`), MB: `je_allocated` (live
    allocations), `je_active`, `je_resident`, `je_retained`."""
    mallctl = _mallctl()
    epoch, size = ctypes.c_uint64(1), ctypes.c_size_t(8)
    mallctl(b"epoch", ctypes.byref(epoch), ctypes.byref(size), ctypes.byref(epoch), size)
    got = {}
    for name in ("allocated", "active", "resident", "retained"):
        value, size = ctypes.c_size_t(0), ctypes.c_size_t(8)
        mallctl(f"stats.{name}".encode(), ctypes.byref(value), ctypes.byref(size), None, 0)
        got[f"je_{name}"] = value.value / 2**20
    return got


class MemorySampler:
    """Diagnosis (BENCH_SCALE_SAMPLE=1): samples the process's RSS, glibc's heap (mallinfo2:
    bytes in use, bytes free but kept) and the held DuckDB connection's `duckdb_memory()`
    every SAMPLE_S, and prints the samples at the highest RSS and a timeline to stderr."""

    SAMPLE_S = 0.5

    def __init__(self) -> None:
        import threading

        class Mallinfo2(ctypes.Structure):
            _fields_ = [
                (n, ctypes.c_size_t)
                for n in (
                    "arena",
                    "ordblks",
                    "smblks",
                    "hblks",
                    "hblkhd",
                    "usmblks",
                    "fsmblks",
                    "uordblks",
                    "fordblks",
                    "keepcost",
                )
            ]

        self._libc = ctypes.CDLL("libc.so.6")
        self._libc.mallinfo2.restype = Mallinfo2
        self.samples: list[dict[str, float]] = []
        self.spike_sites: collections.Counter[str] = collections.Counter()
        self.top_spike: tuple[float, list[str]] = (0.0, [])  # DuckDB's highest sample, its sites
        self.started = time.monotonic()
        self.closes: list[dict[str, typing.Any]] = []  # BENCH_SCALE_CLOSES: each store close
        if folder := os.environ.get("BENCH_SCALE_CLOSES"):
            self._trace_closes(Path(folder))
        self._stop = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    def _duckdb_mb(self) -> tuple[float, str]:
        from toucan import store as store_module

        for held in list(store_module._HELD.values()):
            if not held.lock.acquire(timeout=0.3):
                return -1.0, "busy"
            try:
                if held._con is None:
                    return 0.0, "closed"
                cursor = held._con.cursor()
                tags = cursor.execute(
                    "SELECT tag, memory_usage_bytes FROM duckdb_memory() "
                    "WHERE memory_usage_bytes > 2**20 ORDER BY 2 DESC"
                ).fetchall()
                limit = cursor.execute("SELECT current_setting('memory_limit')").fetchone()[0]
                cursor.close()
                top = ",".join(f"{tag}:{used / 2**20:.0f}" for tag, used in tags)
                return sum(used for _, used in tags) / 2**20, f"{limit}|{top}"
            finally:
                held.lock.release()
        return 0.0, "none"

    def _trace_closes(self, folder: Path) -> None:
        """Diagnosis of close-checkpoints (BENCH_SCALE_CLOSES=DIR): every attachment of the
        store logs DuckDB's checkpoint decisions (its `Checkpoint` log type: per row group,
        checkpoint or vacuum) to DIR/<n>, detaches before its close (a close's checkpoint is
        not logged), and each close's time, duration and jemalloc figures before and after
        are kept for `report`."""
        from toucan import store as store_module

        attach, release = store_module._attach, store_module._Attachment.release
        sampler = self

        def logged_attach(path: Path, **options: typing.Any) -> typing.Any:
            con = attach(path, **options)
            logs = folder / str(len(sampler.closes))
            con.execute(
                f"CALL enable_logging(level='debug', storage='file', storage_path='{logs}')"
            )
            return con

        def traced_release(attachment: typing.Any) -> None:
            last = attachment.users == 1
            before = jemalloc_mb()["je_allocated"] if last else 0.0
            started = time.monotonic()
            if last:
                with contextlib.suppress(Exception):
                    attachment._con.execute("USE memory")
                    attachment._con.execute(f"DETACH {store_module._CATALOG}")
            release(attachment)
            if last:
                sampler.closes.append(
                    {
                        "t": started - sampler.started,
                        "s": time.monotonic() - started,
                        "je_before": before,
                        "je_after": jemalloc_mb()["je_allocated"],
                        "logs": str(folder / str(len(sampler.closes))),
                    }
                )

        store_module._attach = logged_attach
        store_module._Attachment.release = traced_release

    def _note_spike_sites(self, allocated_mb: float) -> None:
        """Where our code is (innermost three of our frames per thread) while DuckDB's
        allocation is above SPIKE_MB: which queries or writes make its peaks. The sites of
        the highest such sample are kept apart: a single spike is lost among idle waits."""
        import traceback

        sites = []
        for thread_id, frame in sys._current_frames().items():
            if thread_id == threading_get_ident():
                continue
            ours = [
                f"{Path(f.filename).parent.name}/{Path(f.filename).name}:{f.name}:{f.lineno}"
                for f in traceback.extract_stack(frame)
                if str(ROOT) in f.filename and "/.venv/" not in f.filename
            ]
            if ours:
                sites.append(" < ".join(reversed(ours[-3:])))
        self.spike_sites.update(sites)
        if allocated_mb > self.top_spike[0]:
            self.top_spike = (allocated_mb, sites)

    def _run(self) -> None:
        while not self._stop.wait(self.SAMPLE_S):
            with open("/proc/self/status") as status:
                kib = {
                    line.split(":")[0]: int(line.split()[1])
                    for line in status
                    if line.startswith(("VmRSS", "RssAnon", "RssFile"))
                }
            rss = kib["VmRSS"]
            if os.environ.get("BENCH_SCALE_TRIM"):  # experiment: what glibc gives back
                self._libc.malloc_trim(0)
            info = self._libc.mallinfo2()
            je = jemalloc_mb()
            if je["je_allocated"] > SPIKE_MB:
                self._note_spike_sites(je["je_allocated"])
            duck, limit = self._duckdb_mb()
            self.samples.append(
                {
                    "t": time.monotonic() - self.started,
                    "rss": rss / 1024,
                    "heap_used": (info.uordblks + info.hblkhd) / 2**20,
                    "heap_free": info.fordblks / 2**20,
                    "duckdb": duck,
                    "limit": limit,
                    "pyblocks_k": sys.getallocatedblocks() / 1000,
                    "anon": kib["RssAnon"] / 1024,
                    "file": kib["RssFile"] / 1024,
                    **je,
                }
            )

    def report(self, out: typing.TextIO) -> None:
        self._stop.set()
        if not self.samples:
            return
        top = max(self.samples, key=lambda sample: sample["rss"])
        step = max(1, len(self.samples) // 30)
        for sample in self.samples[::step]:
            print(
                " ".join(
                    f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}"
                    for k, v in sample.items()
                ),
                file=out,
            )
        print(f"at peak RSS: {top}", file=out)
        for site, seen in self.spike_sites.most_common(8):
            print(f"DuckDB over {SPIKE_MB} MB, {seen} samples: {site}", file=out)
        for close in self.closes:
            during = [
                sample["je_allocated"]
                for sample in self.samples
                if close["t"] - 0.1 <= sample["t"] <= close["t"] + close["s"] + 0.6
            ]
            close["je_during"] = max(during, default=0.0)
        worst = sorted(self.closes, key=lambda close: close["je_during"], reverse=True)[:6]
        for close in sorted(worst, key=lambda close: close["t"]):
            print(f"close: {close}", file=out)
        print(f"closes: {len(self.closes)}", file=out)
        allocated, sites = self.top_spike
        for site in sites:
            print(f"at DuckDB's highest sample ({allocated:.0f} MB): {site}", file=out)
