"""Near-duplicate questions: keep the first of each pair, reject the other with the kept id.

Method: rapidfuzz `token_sort_ratio` (0-100) over normalised questions (lower case, word
characters only), compared within one block = the same set of servers (the same question over
other servers is another tool-use task). A pair at or above the threshold (default 0.9 x 100)
is a duplicate; the task earlier in the order given (prior runs first, then plan order) is kept.
`token_sort_ratio` rather than `token_set_ratio`: the set ratio scores 100 whenever one
question's words are a subset of the other's, which would fold a short question into any longer
one that mentions the same words. Within a block this is an exact all-pairs comparison
(`rapidfuzz.process.cdist`, C speed); blocks are small.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from rapidfuzz import fuzz, process

from toucan.records import Task

WORD = re.compile(r"\w+")


def normalise_question(question: str) -> str:
    return " ".join(WORD.findall(question.lower()))


def dedup_block_key(task: Task) -> tuple[str, ...]:
    return tuple(sorted(set(task.server_ids)))


def find_near_duplicates(ordered_tasks: Sequence[Task], threshold: float) -> dict[str, str]:
    """Map dropped task id -> kept task id, for `ok` tasks in priority order (first is kept)."""
    blocks: dict[tuple[str, ...], list[Task]] = {}
    for task in ordered_tasks:
        if task.status == "ok":
            blocks.setdefault(dedup_block_key(task), []).append(task)
    dropped: dict[str, str] = {}
    cutoff = threshold * 100
    for block in blocks.values():
        if len(block) < 2:
            continue
        texts = [normalise_question(task.question) for task in block]
        scores = process.cdist(texts, texts, scorer=fuzz.token_sort_ratio, score_cutoff=cutoff)
        for later in range(1, len(block)):
            if block[later].task_id in dropped:
                continue
            for earlier in range(later):
                if block[earlier].task_id in dropped:
                    continue
                if scores[later, earlier] >= cutoff:
                    dropped[block[later].task_id] = block[earlier].task_id
                    break
    return dropped


def mark_near_duplicates(dropped: dict[str, str], tasks: Sequence[Task]) -> list[Task]:
    """The dropped tasks rewritten as rejections (reason near_duplicate, kept id in metadata)."""
    by_id = {task.task_id: task for task in tasks}
    return [
        by_id[task_id].model_copy(
            update={
                "status": "rejected",
                "reason": "near_duplicate",
                "metadata": {**by_id[task_id].metadata, "duplicate_of": kept_id},
            }
        )
        for task_id, kept_id in sorted(dropped.items())
    ]
