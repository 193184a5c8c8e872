"""A real DuckDB store filled with many rows fast, for memory tests and benchmarks at scale.

`fill_tasks` writes N ok original tasks and `fill_llm_cache` N stored model replies with one
INSERT ... SELECT over `range(N)` each; `fill_task_ratings` keeps every such task and
`fill_trajectories` copies a template trajectory and its keeping rating onto each, in SQL (100k rows in a few seconds; building N pydantic records
and inserting them would take minutes). The rows have the shapes and about the sizes of real
ones: a ~80-character question of 16 random 4-letter words (the near-duplicate pass reads
4-letter word prefixes: shared words would make every pair a candidate), on one of the given
servers with a target tool, usage and metadata; a valid `LlmReply` of ~1 KB under a real-shaped cache key (`llm_` + 20 hex digits),
so a rerun could serve it. `index_tasks` puts the tasks into the near-duplicate index, as the
synthesize runs that wrote them would have (its cost is that pass's, ~10 s per 100k).
`append_trajectories` appends trajectory-shaped rows of a given width as a batch writes them.
"""

from __future__ import annotations

from typing import Any

import orjson

from flows.dedup import dedup_pending_tasks
from toucan.llm.replies import LlmReply
from toucan.records import LlmCacheEntry, Task, TaskRating, Trajectory, TrajectoryRating
from toucan.store import Store

REPLY_TEXT_CHARS = 800  # a generator's JSON answer holding a question is about this long


def fill_tasks(
    store: Store,
    count: int,
    server_ids: list[str],
    *,
    tag: str = "bulk",
    tools: list[str] | None = None,
) -> int:
    """Insert `count` ok original tasks, spread over `server_ids` (ids `task_<tag>_<n>`,
    questions unique: no two are near-duplicates); returns rows added (existing ids skip).
    The target tool is `tools[k]` on `server_ids[k]` (default: `tool_<n % 4>`)."""
    if not server_ids:
        raise ValueError("fill_tasks needs at least one server id")
    if tools is not None and len(tools) != len(server_ids):
        raise ValueError("fill_tasks needs one tool per server id")
    store.ensure_schema()
    before = store.count(Task)
    _run(
        store,
        """INSERT INTO tasks BY NAME
        SELECT
            'task_' || $tag || '_' || i::VARCHAR AS task_id,
            'original' AS kind,
            'single_server' AS strategy,
            regexp_replace(md5($tag || i::VARCHAR) || md5(i::VARCHAR || $tag),
                '(.{4})', '\\1 ', 'g') || '?' AS question,
            json_array(json_object('server_id', $servers[1 + i % len($servers)],
                'server', 'Bulk Server', 'tool', CASE WHEN $tools IS NULL
                    THEN 'tool_' || (i % 4)::VARCHAR
                    ELSE $tools[1 + i % len($servers)] END)) AS target_tools,
            json_array($servers[1 + i % len($servers)]) AS server_ids,
            'Qwen2-72B-Instruct' AS generator,
            'Qwen2-72B-Instruct' AS deployment,
            json_object('prompt_tokens', 900, 'completion_tokens', 120,
                'server_request_tokens', 0, 'total_tokens', 1020) AS usage,
            0.0004 AS cost_usd,
            false AS cached,
            md5('prompt' || i::VARCHAR) AS prompt_hash,
            i AS seed,
            'ok' AS status,
            1 AS attempts,
            json_object('slot', i, 'bulk', true) AS metadata,
            'run_' || $tag AS run_id,
            now()::TIMESTAMP AS created_at
        FROM range($count) r(i)
        ON CONFLICT DO NOTHING""",
        {"tag": tag, "servers": server_ids, "count": count, "tools": tools},
    )
    return store.count(Task) - before


def fill_task_ratings(store: Store, *, tag: str = "bulk") -> int:
    """A keeping ok rating (`trate_<tag>_<n>`) for every task `task_<tag>_<n>`; returns rows
    added."""
    before = store.count(TaskRating)
    _run(
        store,
        """INSERT INTO task_ratings BY NAME
        SELECT 'trate_' || substr(task_id, 6) AS rating_id, task_id, 'Judge' AS judge,
            json_object('question_quality', json_object('reasoning', 'clear', 'score', 4))
                AS scores,
            4.0 AS overall, true AS keep, 'ok' AS status, 1 AS attempts,
            json_object('prompt_tokens', 900, 'completion_tokens', 60) AS usage,
            0.0001 AS cost_usd, false AS cached, md5('rate' || task_id) AS prompt_hash,
            'run_' || $tag AS run_id, now()::TIMESTAMP AS created_at
        FROM tasks WHERE task_id LIKE 'task_' || $tag || '_%'
        ON CONFLICT DO NOTHING""",
        {"tag": tag},
    )
    return store.count(TaskRating) - before


def fill_trajectories(
    store: Store, template: Trajectory, rating: TrajectoryRating, *, tag: str = "bulk"
) -> int:
    """A copy of `template` (and of its keeping `rating`) for every task `task_<tag>_<n>`: ids
    `traj_<tag>_<n>` / `jrate_<tag>_<n>`, the text QUESTION in its messages replaced by the
    task's question; returns trajectories added. The copies are made in SQL from the template
    rows, which are removed after."""
    before = store.count(Trajectory)
    template = template.model_copy(update={"trajectory_id": f"traj_{tag}_template"})
    rating = rating.model_copy(
        update={"rating_id": f"jrate_{tag}_template", "trajectory_id": template.trajectory_id}
    )
    store.insert([template, rating])
    _run(
        store,
        """INSERT INTO trajectories BY NAME
        SELECT t.* REPLACE (
            'traj_' || substr(k.task_id, 6) AS trajectory_id, k.task_id AS task_id,
            replace(t.messages::VARCHAR, 'QUESTION', k.question)::JSON AS messages)
        FROM trajectories t, tasks k
        WHERE t.trajectory_id = $template AND k.task_id LIKE 'task_' || $tag || '_%'
        ON CONFLICT DO NOTHING""",
        {"tag": tag, "template": template.trajectory_id},
    )
    _run(
        store,
        """INSERT INTO trajectory_ratings BY NAME
        SELECT r.* REPLACE ('jrate_' || substr(t.trajectory_id, 6) AS rating_id,
            t.trajectory_id AS trajectory_id)
        FROM trajectory_ratings r, trajectories t
        WHERE r.rating_id = $rating AND t.trajectory_id LIKE 'traj_' || $tag || '_%'
            AND t.trajectory_id <> $template
        ON CONFLICT DO NOTHING""",
        {"tag": tag, "rating": rating.rating_id, "template": template.trajectory_id},
    )
    _run(store, "DELETE FROM trajectory_ratings WHERE rating_id = $id", {"id": rating.rating_id})
    _run(
        store, "DELETE FROM trajectories WHERE trajectory_id = $id", {"id": template.trajectory_id}
    )
    return store.count(Trajectory) - before


def fill_llm_cache(
    store: Store, count: int, *, tag: str = "bulk", model: str = "openai/Qwen2-72B-Instruct"
) -> int:
    """Insert `count` stored replies of LiteLLM model string `model` (valid `LlmReply` JSON of
    ~1 KB, keys `llm_` + 20 hex digits like make_cache_key's); returns rows added."""
    template = LlmReply(
        text="",
        finish_reason="stop",
        deployment="Qwen2-72B-Instruct",
        model=model,
        served_by="Qwen2-72B-Instruct",
    ).model_dump(mode="json")
    store.ensure_schema()
    before = store.count(LlmCacheEntry)
    _run(
        store,
        """INSERT INTO llm_cache BY NAME
        SELECT
            'llm_' || substr(md5($tag || i::VARCHAR), 1, 20) AS cache_key,
            $model AS model,
            md5('prompt' || $tag || i::VARCHAR) AS prompt_hash,
            substr(md5('params' || i::VARCHAR), 1, 32) AS params_hash,
            json_merge_patch($template::JSON, json_object('text',
                'reply ' || i::VARCHAR || ' ' || repeat('x', $chars))) AS reply,
            'run_' || $tag AS run_id,
            now()::TIMESTAMP AS created_at
        FROM range($count) r(i)
        ON CONFLICT DO NOTHING""",
        {
            "tag": tag,
            "count": count,
            "model": model,
            "template": orjson.dumps(template).decode(),
            "chars": REPLY_TEXT_CHARS,
        },
    )
    return store.count(LlmCacheEntry) - before


def append_trajectories(store: Store, first: int, count: int, chars: int) -> None:
    """`count` trajectories `traj_<first>`... in one append, as a batch writes them: a user
    message of about `chars` characters of hex words and numbers (it compresses about as
    conversation JSON does; distinct per row, so no run of equal values shrinks it)."""
    words = max(1, chars // 40)
    _run(
        store,
        f"""INSERT INTO trajectories (trajectory_id, task_id, teacher, messages)
        SELECT 'traj_' || lpad((range + $first)::VARCHAR, 9, '0'), 'task_' || range, 'teacher',
            to_json([{{'role': 'user', 'content': array_to_string(
                [md5((range + $first + k)::VARCHAR) || ' the forecast for city ' || k::VARCHAR
                    for k in range({words})], ' ')}}])
        FROM range($count)""",
        {"first": first, "count": count},
    )


def _run(store: Store, sql: str, params: dict[str, Any]) -> None:
    """One statement with named ($name) parameters, through the store's connection."""
    with store.connect() as con:
        con.execute(sql, params)


def index_tasks(store: Store, threshold: float = 0.9) -> int:
    """Run the near-duplicate pass over the tasks not indexed yet; returns how many it dropped
    (0 for `fill_tasks` rows, whose questions all differ)."""
    return len(dedup_pending_tasks(store, threshold))
