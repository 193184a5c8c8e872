"""Stage 1 flow: onboard every catalog entry into `servers` and `tools`.

Live onboarding fans out one Prefect task per server (with Prefect retries for a server that
failed in a way worth retrying); `--specs-only` ingests declared tools without connecting.
The flow run is the only writer: tasks return outcomes, the flow stores them as they finish.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, task
from prefect.futures import as_completed
from prefect.runtime import task_run
from pydantic import BaseModel, Field

from mcp_env.catalog import CatalogRejection, load_catalog, parse_catalog_entries
from mcp_env.environment import make_pool
from mcp_env.fleet.catalog import CATALOG_PATH, load_fleet_catalog
from mcp_env.health import ServerCheck, check_server
from mcp_env.results import ListedTool
from mcp_env.specs import parse_server_spec
from tasks.onboard import (
    TRANSIENT_REASONS,
    AnySpec,
    OnboardOutcome,
    ToolVersions,
    needs_credentials_outcome,
    onboard_from_check,
    onboard_from_specs,
    rejection_outcome,
    tool_records,
)
from toucan.config import McpConfig, Settings, load_settings
from toucan.progress import report_progress
from toucan.records import Server, Tool
from toucan.runs import RunContext, stage_run
from toucan.store import Store

STAGE = "onboard"


class OnboardSummary(BaseModel):
    run_id: str
    servers: list[dict[str, object]] = Field(default_factory=list)
    summary: dict[str, int] = Field(default_factory=dict)


class ServerAttemptFailed(Exception):
    """Raised inside the task so Prefect retries a server that failed transiently."""


@task(name="onboard-server", retries=1, retry_delay_seconds=2, persist_result=False)
async def onboard_server_task(
    spec_data: dict[str, object], mcp: dict[str, object], categories: list[str], retries: int
) -> OnboardOutcome:
    spec = parse_server_spec(spec_data)
    mcp_config = McpConfig.model_validate(mcp)
    async with make_pool(mcp_config) as pool:
        check = await check_server(spec, pool)
    outcome = onboard_from_check(spec, check, categories)
    attempt = task_run.run_count or 1
    if outcome.server.status != "ok" and check.reason in TRANSIENT_REASONS and attempt <= retries:
        raise ServerAttemptFailed(f"{spec.name}: {check.reason} ({check.detail})")
    return outcome


def load_entries(
    catalogs: list[str] | None, settings: Settings
) -> tuple[list[AnySpec], list[CatalogRejection]]:
    """Specs and rejections from the given catalog files, or from the bundled fleet."""
    if not catalogs:
        fleet_dir = Path(settings.mcp.fleet_dir).resolve()
        entries = load_fleet_catalog(fleet_dir)
        return parse_catalog_entries(entries, source=str(CATALOG_PATH))
    specs: list[AnySpec] = []
    rejections: list[CatalogRejection] = []
    for path in catalogs:
        loaded = load_catalog(Path(path))
        specs.extend(loaded.specs)
        rejections.extend(loaded.rejections)
    return specs, rejections


def store_outcomes(ctx: RunContext, outcomes: list[OnboardOutcome]) -> int:
    """Upsert server rows, insert new tool versions, mark superseded versions not current."""
    servers = [o.server.model_copy(update={"run_id": ctx.run_id}) for o in outcomes]
    ctx.store.upsert(servers)
    listings: dict[str, list[ListedTool]] = {}
    rejected: dict[str, set[str]] = {}
    for outcome in outcomes:
        listings.setdefault(outcome.server.server_id, []).extend(outcome.tools)
        # a tool that was usable in an earlier run and is rejected now must not be synthesized
        usable = {tool.name for tool in outcome.tools}
        rejected.setdefault(outcome.server.server_id, set()).update(
            t.name for t in outcome.server.rejected_tools if t.name not in usable
        )
    added = store_tool_versions(ctx.store, listings, ctx.run_id, rejected)
    ctx.flush_events()
    return added


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
        "SELECT server_id, name, schema_hash, version FROM tools WHERE list_contains(?, server_id)",
        [server_ids],
    )
    known: dict[str, ToolVersions] = {}
    for server_id, name, digest, version in rows:
        known.setdefault(server_id, ToolVersions()).by_name.setdefault(name, {})[digest] = version
    return known


def summarize(outcomes: list[OnboardOutcome]) -> dict[str, int]:
    ok = [o for o in outcomes if o.server.status in ("ok", "specs_only")]
    return {
        "total": len(outcomes),
        "ok": len(ok),
        "rejected": len(outcomes) - len(ok),
        "tools": sum(o.server.tool_count for o in ok),
        "domains": len({o.server.domain for o in ok if o.server.domain}),
    }


def server_row_view(server: Server) -> dict[str, object]:
    return {
        "server_id": server.server_id,
        "name": server.name,
        "transport": server.transport,
        "status": server.status,
        "reason": server.reason,
        "detail": server.detail,
        "tools": server.tool_count,
        "transport_used": server.transport_used,
        "notes": server.notes,
        "rejected_tools": [t.model_dump() for t in server.rejected_tools],
        "domain": server.domain,
        "domain_source": server.domain_source,
        "latency_ms": None
        if server.connect_latency_ms is None
        else round(server.connect_latency_ms, 1),
        "needs_credentials": server.needs_credentials,
    }


def onboard_live(ctx: RunContext, specs: list[AnySpec], outcomes: list[OnboardOutcome]) -> None:
    settings = ctx.settings
    categories = list(settings.categories)
    total = len(specs) + len(outcomes)
    runnable = []
    for spec in specs:
        if spec.missing_config():
            outcomes.append(needs_credentials_outcome(spec, categories))
        else:
            runnable.append(spec)
    store_outcomes(ctx, outcomes)
    report_progress(STAGE, len(outcomes), total)
    retries = settings.onboard.retries
    server_task = onboard_server_task.with_options(retries=retries)
    futures = {
        server_task.submit(
            spec.model_dump(mode="json"), settings.mcp.model_dump(mode="json"), categories, retries
        ): spec
        for spec in runnable
    }
    for future in as_completed(list(futures)):
        spec = futures[future]
        try:
            outcome = future.result()
        except Exception as exc:  # the stage edge: a server that failed every attempt
            outcome = onboard_from_check(spec, failed_check(spec, exc), categories)
        ctx.events.record(
            item_id=outcome.server.server_id,
            server=outcome.server.name,
            status="ok" if outcome.server.status == "ok" else "rejected",
            error_class=outcome.server.reason,
            error=outcome.server.detail,
            latency_ms=outcome.server.connect_latency_ms or 0.0,
        )
        outcomes.append(outcome)
        store_outcomes(ctx, [outcome])
        report_progress(STAGE, len(outcomes), total, spec.name, outcome.server.status)


def failed_check(spec: AnySpec, exc: BaseException) -> ServerCheck:
    """A task that raised on its last attempt, as a rejected check with the best reason known."""
    reason = getattr(exc, "reason", None) or "onboard_failed"
    if isinstance(exc, ServerAttemptFailed):
        reason = str(exc).split(": ", 1)[-1].split(" ", 1)[0]
    return ServerCheck(
        server_id=spec.server_id,
        name=spec.name,
        status="rejected",
        reason=reason,
        detail=str(exc)[:2000],
    )


@flow(name="onboard", log_prints=False, persist_result=False)
def onboard_flow(
    catalogs: list[str] | None = None,
    store: str | None = None,
    specs_only: bool = False,
    config: str | None = None,
    profile: str | None = None,
) -> OnboardSummary:
    """Onboard the given catalogs (default: the bundled fleet) into the store."""
    settings = load_settings(config, profile=profile)
    target = Store(store or settings.store)
    specs, rejections = load_entries(catalogs, settings)
    params = {"catalogs": catalogs, "specs_only": specs_only}
    with stage_run(target, settings, STAGE, params) as ctx:
        outcomes = [rejection_outcome(r) for r in rejections]
        if specs_only:
            outcomes.extend(onboard_from_specs(s, settings.categories) for s in specs)
            for outcome in outcomes:
                ctx.events.record(
                    item_id=outcome.server.server_id,
                    server=outcome.server.name,
                    status="ok" if outcome.server.status != "rejected" else "rejected",
                    error_class=outcome.server.reason,
                )
            store_outcomes(ctx, outcomes)
            report_progress(STAGE, len(outcomes), len(outcomes))
        else:
            onboard_live(ctx, specs, outcomes)
        ctx.summary = summarize(outcomes)
        views = sorted((server_row_view(o.server) for o in outcomes), key=lambda v: str(v["name"]))
        return OnboardSummary(run_id=ctx.run_id, servers=views, summary=ctx.summary)
