"""A stage's history as an estimate reads it from the store: per past item, what its model calls
took (tokens, calls, the first call's prompt, seconds), and the yields that carry items from one
stage to the next (ok tasks per slot, kept tasks per rating). Read-only, a bounded read."""

from __future__ import annotations

from pydantic import BaseModel

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
