"""The near-duplicate pass at paper scale, on a real DuckDB file.

    .venv/bin/python bench/bench_dedup.py [--sizes 10000 100000 1000000] [--increment 10000]
        [--recall-sample 40000] [--skew 0.7] [--dup-share 0.1] [--threshold 0.9]

For each size N: a fresh store holding N ok tasks of one synthesize run (`dedup_corpus.py`:
realistic lengths, vocabulary shared within a server, 1,699 servers with skewed block sizes,
10% near-duplicates), then `flows.dedup.dedup_pending_tasks` from scratch. After the largest
size, `--increment` tasks of a later run are added and the pass runs again (the incremental
case). Each pass runs in a fresh process: its seconds, peak RSS (VmHWM) and the RSS it
started with (imports) are printed. Store seeding is not timed.

Recall: on a sample of blocks (up to --recall-sample tasks, blocks of at most 5,000), the pairs
with token_sort_ratio >= threshold x 100 found by the exact all-pairs method (rapidfuzz
`cdist`, the pre-LSH implementation) against the pairs that share an LSH band key; and the
keep-one outcome of both methods on that sample (dropped id -> kept id), compared.
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from dedup_corpus import Corpus, make_corpus  # noqa: E402
from memory_sampler import peak_rss_mb  # noqa: E402
from rapidfuzz import fuzz, process  # noqa: E402

from tasks.dedup import (  # noqa: E402
    band_keys,
    colliding_earlier,
    dedup_item,
    find_near_duplicates,
    normalise_question,
)
from toucan.ids import make_id  # noqa: E402
from toucan.records import Run, Task  # noqa: E402
from toucan.store import Store  # noqa: E402

SEED_BATCH = 100_000
MAX_RECALL_BLOCK = 5_000


def task_rows(corpus: Corpus, start: int, stop: int, run_id: str) -> list[Task]:
    return [
        Task(
            task_id=make_id("task", "bench-dedup", index),
            strategy="single_server" if len(corpus.blocks[index]) == 1 else "multi_server",
            question=corpus.questions[index],
            server_ids=list(corpus.blocks[index]),
            metadata={"slot": index},
            run_id=run_id,
        )
        for index in range(start, stop)
    ]


def seed_store(store: Store, corpus: Corpus, start: int, stop: int, started: datetime) -> None:
    """Tasks [start, stop) of the corpus as one synthesize run's ok tasks."""
    run_id = f"run-{start}"
    store.insert([Run(run_id=run_id, stage="synthesize", status="completed", started_at=started)])
    for first in range(start, stop, SEED_BATCH):
        store.insert(task_rows(corpus, first, min(first + SEED_BATCH, stop), run_id))


def timed_pass(path: str, threshold: float) -> tuple[float, float, float, float, int]:
    """In a fresh process: seconds, CPU seconds (all threads, DuckDB's included), peak RSS MB,
    starting RSS MB, tasks dropped."""
    import psutil

    from flows.dedup import dedup_pending_tasks

    start_rss = psutil.Process().memory_info().rss / 2**20
    started, cpu_started = time.perf_counter(), time.process_time()
    dropped = dedup_pending_tasks(Store(path), threshold)
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    return seconds, cpu_seconds, peak_rss_mb(), start_rss, len(dropped)


def run_pass(path: Path, threshold: float, label: str) -> None:
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        seconds, cpu, peak, start_rss, dropped = pool.apply(timed_pass, (str(path), threshold))
    print(
        f"{label:<28} {seconds:8.1f} s (CPU {cpu:6.1f} s)  peak RSS {peak:6.0f} MB "
        f"(at start {start_rss:4.0f} MB)  near duplicates {dropped:,}",
        flush=True,
    )


def all_pairs_near_duplicates(tasks: Sequence[Task], threshold: float) -> dict[str, str]:
    """The pre-LSH method, kept here as the reference: every pair within a block."""
    blocks: dict[tuple[str, ...], list[Task]] = {}
    for task in tasks:
        blocks.setdefault(tuple(sorted(set(task.server_ids))), []).append(task)
    dropped: dict[str, str] = {}
    cutoff = threshold * 100
    for block in blocks.values():
        texts = [normalise_question(task.question) for task in block]
        scores = process.cdist(texts, texts, scorer=fuzz.token_sort_ratio, score_cutoff=cutoff)
        for later in range(1, len(block)):
            for earlier in np.flatnonzero(scores[later, :later] >= cutoff):  # in order
                if block[earlier].task_id not in dropped:
                    dropped[block[later].task_id] = block[earlier].task_id
                    break
    return dropped


def sample_tasks(corpus: Corpus, limit: int, seed: int) -> list[Task]:
    """Whole blocks (of at most MAX_RECALL_BLOCK tasks), drawn at random, in plan order."""
    members: dict[tuple[str, ...], list[int]] = {}
    for index, block in enumerate(corpus.blocks):
        members.setdefault(block, []).append(index)
    chosen: list[int] = []
    rng = np.random.default_rng(seed)
    blocks = list(members.values())
    for number in rng.permutation(len(blocks)):
        if len(blocks[number]) <= MAX_RECALL_BLOCK and len(chosen) < limit:
            chosen.extend(blocks[number])
    chosen.sort()
    return [task for index in chosen for task in task_rows(corpus, index, index + 1, "sample")]


def measure_recall(corpus: Corpus, limit: int, threshold: float) -> None:
    tasks = sample_tasks(corpus, limit, seed=1)
    items = [dedup_item(t.task_id, t.question, t.server_ids) for t in tasks]
    keys = band_keys(items)
    candidates = {(row, e) for row, rows in colliding_earlier(keys).items() for e in rows}
    exact: set[tuple[int, int]] = set()
    rows_of: dict[tuple[str, ...], list[int]] = {}
    for row, item in enumerate(items):
        rows_of.setdefault(item.block, []).append(row)
    for rows in rows_of.values():
        texts = [items[row].text for row in rows]
        scores = process.cdist(texts, texts, scorer=fuzz.token_sort_ratio)
        later, earlier = np.nonzero(np.tril(scores >= threshold * 100, -1))
        exact.update(
            (rows[a], rows[b]) for a, b in zip(later.tolist(), earlier.tolist(), strict=True)
        )
    found = len(exact & candidates)
    print(
        f"recall on {len(tasks):,} sampled tasks ({len(rows_of):,} blocks): "
        f"{found:,} of {len(exact):,} pairs with ratio >= {threshold * 100:g} share a band "
        f"= {found / max(1, len(exact)):.4f}; {len(candidates) / len(tasks):.2f} candidate "
        "pairs per task",
        flush=True,
    )
    started = time.perf_counter()
    reference = all_pairs_near_duplicates(tasks, threshold)
    all_pairs_s = time.perf_counter() - started
    started = time.perf_counter()
    lsh = find_near_duplicates(tasks, threshold)
    lsh_s = time.perf_counter() - started
    differ = sum(1 for k in reference.keys() | lsh.keys() if reference.get(k) != lsh.get(k))
    print(
        f"keep-one outcome: all-pairs drops {len(reference):,} ({all_pairs_s:.1f} s), LSH drops "
        f"{len(lsh):,} ({lsh_s:.1f} s); tasks decided differently: {differ}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--increment", type=int, default=10_000)
    parser.add_argument("--recall-sample", type=int, default=40_000)
    parser.add_argument("--skew", type=float, default=0.7)
    parser.add_argument("--dup-share", type=float, default=0.1)
    parser.add_argument("--threshold", type=float, default=0.9)
    args = parser.parse_args()
    largest = max(args.sizes)
    corpus = make_corpus(largest + args.increment, dup_share=args.dup_share, skew=args.skew)
    sizes = Counter(corpus.blocks[:largest])
    print(
        f"corpus: {largest:,} tasks, {len(sizes):,} blocks, largest {max(sizes.values()):,}, "
        f"median question {np.median([len(q) for q in corpus.questions]):.0f} chars",
        flush=True,
    )
    measure_recall(corpus, args.recall_sample, args.threshold)
    start = datetime(2026, 1, 1)
    with tempfile.TemporaryDirectory() as folder:
        for size in sorted(args.sizes):
            path = Path(folder) / f"dedup-{size}.duckdb"
            seed_store(Store(path), corpus, 0, size, start)
            run_pass(path, args.threshold, f"from scratch {size:,}")
        seed_store(Store(path), corpus, largest, largest + args.increment, start + timedelta(1))
        run_pass(path, args.threshold, f"increment {args.increment:,} on {largest:,}")
        print(f"store file {path.stat().st_size / 2**20:,.0f} MB", flush=True)


if __name__ == "__main__":
    main()
