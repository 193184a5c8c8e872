"""When a stage counts as complete on a store, and which parameters its flow takes.

A stage is *complete* when
1. its latest run there ended `completed`, and did not end `NothingProduced` (it planned work
   and none came out ok: every server rejected, say; flows/outcome.py),
2. that run ended after the latest completed run of every stage before it (new upstream rows
   mean new work), and
3. it has no unfinished items: its registry entry's `pending` query (flows/queries.py), which
   counts items with no row or with a retryable error row.
The `pipeline` flow starts at the first stage that is not complete and runs every stage after.
"""

from __future__ import annotations

import inspect
from datetime import datetime
from typing import Any

from flows.outcome import NOTHING_PRODUCED
from flows.registry import STAGE_NAMES, normalize_stage, stage
from toucan.config import Settings, load_settings
from toucan.records import Run
from toucan.store import Store


def latest_runs(store: Store) -> dict[str, Run]:
    """The newest run of each stage, keyed by stage name."""
    newest: dict[str, Run] = {}
    for run in store.select(Run):
        key = normalize_stage(run.stage)
        if key not in newest or run.started_at > newest[key].started_at:
            newest[key] = run
    return newest


def explain_incomplete(
    store: Store,
    name: str,
    runs: dict[str, Run] | None = None,
    settings: Settings | None = None,
) -> str | None:
    """None when the stage is complete, else a snake_case reason: `never_ran`,
    `last_run_<status>`, `last_run_nothing_produced`, `upstream_changed` or `pending_items`."""
    entry = stage(name)
    runs = latest_runs(store) if runs is None else runs
    latest = runs.get(entry.name)
    if latest is None:
        return "never_ran"
    if latest.status != "completed" or latest.finished_at is None:
        return f"last_run_{latest.status}"
    if (latest.summary.get("outcome") or {}).get("state") == NOTHING_PRODUCED:
        return "last_run_nothing_produced"
    upstream_end = _latest_upstream_end(entry.name, runs)
    if upstream_end is not None and upstream_end > latest.finished_at:
        return "upstream_changed"
    if entry.pending is not None and entry.pending(store, settings or load_settings()):
        return "pending_items"
    return None


def _latest_upstream_end(name: str, runs: dict[str, Run]) -> datetime | None:
    ends = [
        r.finished_at
        for s in STAGE_NAMES[: STAGE_NAMES.index(name)]
        if (r := runs.get(s)) is not None and r.status == "completed" and r.finished_at
    ]
    return max(ends) if ends else None


def stage_kwargs(flow: Any, offered: dict[str, Any]) -> dict[str, Any]:
    """The offered parameters this flow declares, leaving out None so its defaults apply."""
    accepted = inspect.signature(flow.fn).parameters
    return {name: offered[name] for name in accepted if offered.get(name) is not None}
