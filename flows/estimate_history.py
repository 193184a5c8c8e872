"""A stage's history as an estimate reads it from the store: per past item, what its model calls
took (tokens, calls, the first call's prompt, seconds), and the yields that carry items from one
stage to the next (ok tasks per slot, kept tasks per rating, items per kept task). Read-only,
bounded reads."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from flows.trajectories import resolve_teachers
from tasks.diversify import MODES
from toucan.config import Settings
from toucan.store import Store

HISTORY_ITEMS = 500  # the newest items of a stage stand for its history (a bounded read)

# The prompt template of a past item, where a stage has several (its row says which).
TEMPLATES = {
    "synthesize": "SELECT task_id AS item_id, 'synthesize/' || strategy AS template FROM tasks",
    "diversify": (
        "SELECT task_id AS item_id, 'diversify/' || json_extract_string(metadata, '$.mode') "
        "AS template FROM tasks WHERE kind = 'diversified'"
    ),
}

# One row per past item: its `item` events (the unit of work: status and, for agent stages,
# its whole duration) joined with the `llm_call` events it made. Calls answered from the cache
# cost nothing, so an item answered only from the cache says nothing about the next run.
PAST_ITEMS_SQL = """
WITH calls AS (
    SELECT item_id,
        count(*) FILTER (WHERE status = 'ok') AS calls,
        count(*) FILTER (WHERE status = 'cached') AS cached,
        coalesce(sum(tokens_in) FILTER (WHERE status = 'ok'), 0) AS tokens_in,
        coalesce(sum(tokens_out) FILTER (WHERE status = 'ok'), 0) AS tokens_out,
        arg_min(tokens_in, started_at) FILTER (WHERE status = 'ok') AS first_in,
        arg_min(model, started_at) FILTER (WHERE status = 'ok') AS model,
        coalesce(sum(latency_ms), 0) AS call_ms
    FROM events WHERE stage = ? AND kind = 'llm_call' AND item_id IS NOT NULL
    GROUP BY item_id),
items AS (
    SELECT item_id, arg_max(model, ended_at) AS model, max(latency_ms) AS item_ms,
        max(ended_at) AS ended
    FROM events WHERE stage = ? AND kind = 'item' AND item_id IS NOT NULL
    GROUP BY item_id ORDER BY ended DESC LIMIT ?)
SELECT i.item_id, coalesce(c.model, i.model), coalesce(c.calls, 0), coalesce(c.tokens_in, 0),
    coalesce(c.tokens_out, 0), coalesce(c.first_in, 0),
    greatest(i.item_ms, coalesce(c.call_ms, 0)) / 1000.0, {template}
FROM items i LEFT JOIN calls c USING (item_id) {join}
WHERE coalesce(c.cached, 0) = 0 OR coalesce(c.calls, 0) > 0
ORDER BY i.item_id
"""


class PastItem(BaseModel):
    """One item a past run of the stage did."""

    item_id: str
    deployment: str | None  # who answered its first call (else its item event's model)
    calls: int  # model calls answered (not from the cache)
    tokens_in: int  # prompt tokens of all its calls, as the provider counted them
    tokens_out: int
    first_tokens_in: int  # of its first call: the opening prompt
    seconds: float  # its unit of work's duration, else its calls' summed latency
    template: str | None = None


def read_past_items(store: Store, stage: str, limit: int = HISTORY_ITEMS) -> list[PastItem]:
    """The newest `limit` items of `stage` in the store's events, in item id order."""
    if not store.path.exists():
        return []
    template_sql = TEMPLATES.get(stage)
    template, join = ("NULL", "")
    if template_sql:
        template, join = "t.template", f"LEFT JOIN ({template_sql}) t USING (item_id)"
    rows = store.query(PAST_ITEMS_SQL.format(template=template, join=join), [stage, stage, limit])
    fields = list(PastItem.model_fields)
    return [PastItem(**dict(zip(fields, row, strict=True))) for row in rows]


def ok_task_rate(store: Store) -> tuple[float, int] | None:
    """(share of synthesized slots that became ok tasks, slots seen); None before any."""
    done, ok = store.query(
        "SELECT count(*), count(*) FILTER (WHERE status = 'ok') FROM tasks WHERE kind = 'original'"
    )[0]
    return (ok / done, int(done)) if done else None


def kept_task_rate(store: Store) -> tuple[float, int] | None:
    """(share of task ratings that kept their task, ratings seen); None before any."""
    done, kept = store.query(
        "SELECT count(*), count(*) FILTER (WHERE keep AND status = 'ok') FROM task_ratings"
    )[0]
    return (kept / done, int(done)) if done else None


def question_chars(store: Store) -> float | None:
    """The mean length of the ok tasks' questions; None before any."""
    found = store.query("SELECT avg(length(question)) FROM tasks WHERE status = 'ok'")[0][0]
    return float(found) if found is not None else None


# -- yields: items of a stage per item of the stage before it, and where that came from --


def ok_tasks_per_slot(
    store: Store, settings: Settings, params: dict[str, Any]
) -> tuple[float, str]:
    rate = ok_task_rate(store)
    if rate is None:
        return 1.0, "no synthesis history: every slot counted as an ok task (an upper bound)"
    return rate[0], f"{rate[0]:.0%} of {rate[1]} past slots became ok tasks"


def kept_share(store: Store) -> tuple[float, str]:
    """The share of rated tasks kept, and where that came from."""
    rate = kept_task_rate(store)
    if rate is None:
        return 1.0, "no rating history: every task counted as kept (an upper bound)"
    return rate[0], f"{rate[0]:.0%} of {rate[1]} past ratings kept their task"


def trajectories_per_task(
    store: Store, settings: Settings, params: dict[str, Any]
) -> tuple[float, str]:
    teachers = resolve_teachers(settings, params.get("teachers"))
    styles = params.get("styles") or list(settings.trajectories.styles)
    keep, source = kept_share(store)
    runs = len(teachers) * len(styles)
    return keep * runs, f"{source}; x{runs} teacher-style pairs"


def one_rating_each(store: Store, settings: Settings, params: dict[str, Any]) -> tuple[float, str]:
    return 1.0, "one rating per new trajectory"


def units_per_rating(store: Store, settings: Settings, params: dict[str, Any]) -> tuple[float, str]:
    keep, source = kept_share(store)
    modes = len(MODES)
    return keep * modes, f"{source}; x{modes} modes"
