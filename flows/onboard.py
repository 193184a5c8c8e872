"""Stage 1: onboard every catalog entry into `servers` and `tools`.

Live onboarding runs one batch per server (tasks/onboard.py tries a transient failure again);
`--specs-only` ingests declared tools without connecting. Entries that did not parse and
servers that lack credentials are written before the fan-out, each live server as it ends.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from flows.runner import RunContext, StageJob, StagePlan
from flows.writes import store_tool_versions
from mcp_env.catalog import CatalogRejection, load_catalog, parse_catalog_entries
from mcp_env.fleet.catalog import CATALOG_PATH, load_fleet_catalog
from mcp_env.results import ListedTool
from mcp_env.specs import parse_server_spec
from tasks.onboard import (
    AnySpec,
    OnboardOutcome,
    failed_check,
    needs_credentials_outcome,
    onboard_from_check,
    onboard_from_specs,
    onboard_server,
    rejection_outcome,
)
from toucan.config import Settings
from toucan.records import Server

STAGE = "onboard"


class OnboardSummary(BaseModel):
    run_id: str
    servers: list[dict[str, object]] = Field(default_factory=list)
    summary: dict[str, int] = Field(default_factory=dict)


def load_entries(
    catalogs: list[str] | None, settings: Settings
) -> tuple[list[AnySpec], list[CatalogRejection]]:
    """Specs and rejections from the given catalog files, or from the bundled fleet."""
    if not catalogs:
        fleet_dir = Path(settings.mcp.fleet_dir).resolve()
        entries = load_fleet_catalog(fleet_dir)
        return parse_catalog_entries(entries, source=str(CATALOG_PATH), limits=settings.limits)
    specs: list[AnySpec] = []
    rejections: list[CatalogRejection] = []
    for path in catalogs:
        loaded = load_catalog(Path(path), settings.limits)
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


class OnboardJob(StageJob[dict[str, Any]]):
    """One batch per server to connect (its spec as JSON, so it crosses to a Dask worker);
    entries decided without connecting are written first."""

    name = STAGE
    batch_fn = onboard_server

    @cached_property
    def entries(self) -> tuple[list[AnySpec], list[CatalogRejection]]:
        return load_entries(self.params.catalogs, self.settings)

    def run_params(self) -> dict[str, Any]:
        # the catalogs are read before the run opens: one that cannot be read is a
        # CatalogError for the caller, not a failed run
        self.entries  # noqa: B018
        return super().run_params()

    def plan(self, ctx: RunContext) -> StagePlan[dict[str, Any]]:
        categories, self.views = self.settings.categories, []
        specs, rejections = self.entries
        decided = [rejection_outcome(r) for r in rejections]
        runnable = []
        for spec in specs:
            if self.params.specs_only:
                decided.append(onboard_from_specs(spec, categories, self.settings.limits))
            elif spec.missing_config():
                decided.append(needs_credentials_outcome(spec, categories))
            else:
                runnable.append(spec.model_dump(mode="json"))
        # live runs record events for the servers they connect to; specs-only for every entry
        self.count(ctx, decided, events=self.params.specs_only)
        store_outcomes(ctx, decided)
        # every server is one batch; the task runner bounds how many connect at once
        total = len(decided) + len(runnable)
        return StagePlan(total, 0, runnable, parallel=max(1, len(runnable)))

    def batch_kwargs(self, ctx: RunContext) -> dict[str, Any]:
        settings = self.settings
        return {
            "mcp": settings.mcp.model_dump(mode="json"),
            "categories": list(settings.categories),
            "retries": settings.onboard.retries,
            "limits": settings.limits.model_dump(mode="json"),
        }

    def batch_failed(self, batch: dict[str, Any], error: Exception) -> OnboardOutcome:
        """A server whose batch raised (e.g. its worker died): rejected with the reason."""
        spec = parse_server_spec(batch)
        return onboard_from_check(spec, failed_check(spec, error), self.settings.categories)

    def write(self, ctx: RunContext, output: OnboardOutcome) -> None:
        self.count(ctx, [output], events=True)
        store_outcomes(ctx, [output])

    def count(self, ctx: RunContext, outcomes: list[OnboardOutcome], *, events: bool) -> None:
        for outcome in outcomes:
            server = outcome.server
            usable = server.status in ("ok", "specs_only")
            if events:
                ctx.events.record(
                    item_id=server.server_id,
                    server=server.name,
                    status="ok" if usable else "rejected",
                    error_class=server.reason,
                    latency_ms=server.connect_latency_ms or 0.0,
                )
            ctx.tally.item(server.status, server.reason)
            ctx.tally.add("usable", "", int(usable))
            ctx.tally.add("tools", "", server.tool_count if usable else 0)
            if usable and server.domain:
                ctx.tally.add("domains", server.domain)
            self.views.append(server_row_view(server))

    def summarise(self, ctx: RunContext) -> BaseModel:
        tally = ctx.tally
        ok = tally.total("usable")
        summary = {
            "total": tally.finished,
            "ok": ok,
            "rejected": tally.finished - ok,
            "tools": tally.total("tools"),
            "domains": len(tally.counts("domains")),
        }
        views = sorted(self.views, key=lambda v: str(v["name"]))
        return OnboardSummary(run_id=ctx.run_id, servers=views, summary=summary)

    def run_summary(self, summary: BaseModel) -> dict[str, Any]:
        return dict(summary.summary)  # type: ignore[attr-defined]
