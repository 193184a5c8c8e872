"""Store writes more than one stage makes: a batch's rows + events + cache entries, an agent
batch's trajectories + tool calls, and new tool schema versions. The runner's process is the
only writer; these run there, one batch at a time."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, TypeVar

from flows.run_context import RunContext
from mcp_env.results import ListedTool
from tasks.agent.tool_changes import new_tool_versions
from tasks.llm_batch import BatchOutput
from tasks.onboard import ToolVersions, tool_records
from toucan.records import Event, LlmCacheEntry, Record, Tool, ToolCallRecord, Trajectory
from toucan.store import Store, among

R = TypeVar("R", bound=Record)


class AgentOutput(Protocol):
    """What an agent batch (trajectories, multi-turn) returns."""

    trajectories: list[Trajectory]
    tool_calls: list[ToolCallRecord]
    cache_entries: list[LlmCacheEntry]
    events: list[Event]


def write_output(ctx: RunContext, output: BatchOutput) -> int:
    """Cache entries first (a crash after them still spares the next run the calls), then
    rows (upsert: a retried error row is replaced, its attempts counted), then events."""
    ctx.store.insert(output.cache_entries)
    if ctx.replies is not None:
        ctx.replies.stored(output.cache_entries)
    written = ctx.store.upsert(count_attempts(ctx.store, output.records))
    ctx.store.insert(output.events)
    ctx.flush_events()
    return written


def write_agent_output(ctx: RunContext, output: AgentOutput) -> None:
    """Trajectories (upsert: an error row of an earlier run is replaced, its attempts counted),
    their tool calls, cache entries and events, and the tool schemas a server switched to
    mid-run."""
    ctx.store.upsert(count_attempts(ctx.store, output.trajectories))
    ctx.store.insert([*output.tool_calls, *output.cache_entries, *output.events])
    store_tool_versions(ctx.store, new_tool_versions(output.trajectories), ctx.run_id)
    ctx.flush_events()


def count_attempts(store: Store, records: Sequence[R]) -> list[R]:
    """The records about to replace their rows, each with `attempts` one more than the row it
    replaces (a new item keeps 1): how the retry limit (`retries.max_attempts`) is counted.
    Records without an `attempts` field pass unchanged."""
    counted = [r for r in records if "attempts" in type(r).model_fields]
    if not counted or not store.path.exists():
        return list(records)
    earlier: dict[tuple[type[Record], str], int] = {}
    for model in {type(r) for r in counted}:
        key = model.__key__[0]
        ids = [getattr(r, key) for r in counted if type(r) is model]
        rows = store.query(
            f'SELECT "{key}", coalesce(attempts, 1) FROM {model.__table__} WHERE {among(key)}',
            [ids],
        )
        earlier.update({(model, row_id): int(tries) for row_id, tries in rows})
    numbered = []
    for record in records:
        model = type(record)
        before = earlier.get((model, getattr(record, model.__key__[0], "")))
        numbered.append(
            record if before is None else record.model_copy(update={"attempts": before + 1})
        )
    return numbered


def store_tool_versions(
    store: Store,
    listings: dict[str, list[ListedTool]],
    run_id: str | None,
    rejected: dict[str, set[str]] | None = None,
) -> int:
    """Insert the schemas not stored yet as the next version of their tool and mark the
    versions they supersede (and the `rejected` tool names per server) not current; returns
    the rows added. Onboarding writes every listing; trajectory stages write the schemas a
    server switched to mid-run."""
    if not listings:
        return 0
    known = known_tool_versions(store, list(listings))
    new_tools: list[Tool] = []
    superseded: list[tuple[str, str]] = []
    for server_id, tools in listings.items():
        rows, names = tool_records(server_id, tools, known.get(server_id, ToolVersions()), run_id)
        new_tools.extend(rows)
        superseded.extend((server_id, n) for n in names)
        superseded.extend((server_id, name) for name in sorted((rejected or {}).get(server_id, ())))
    if superseded:
        with store.connect() as con:
            con.executemany(
                "UPDATE tools SET current = false WHERE server_id = ? AND name = ?", superseded
            )
    return store.insert(new_tools)


def known_tool_versions(store: Store, server_ids: list[str]) -> dict[str, ToolVersions]:
    """name -> {schema_hash: version} per server, for the servers about to be written."""
    if not server_ids or not store.path.exists():
        return {}
    rows = store.query(
        f"SELECT server_id, name, schema_hash, version FROM tools WHERE {among('server_id')}",
        [server_ids],
    )
    known: dict[str, ToolVersions] = {}
    for server_id, name, digest, version in rows:
        known.setdefault(server_id, ToolVersions()).by_name.setdefault(name, {})[digest] = version
    return known
