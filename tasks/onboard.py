"""Stage 1, onboarding: turn catalog specs into `servers` and `tools` rows.

Pure functions build the records; `onboard_server` is the unit of work (one server, live,
tried again after a transient failure), the batch the runner fans out per server.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Sequence
from typing import Any

from pydantic import BaseModel, Field

from mcp_env.catalog import CatalogRejection
from mcp_env.environment import make_pool
from mcp_env.health import ServerCheck, check_server
from mcp_env.listing import build_listing
from mcp_env.results import ListedTool, ToolListing
from mcp_env.specs import HttpSpec, SseSpec, StdioSpec, ToolSpec, parse_server_spec
from tasks.domains import label_by_keywords, normalize_category
from toucan.config import McpConfig
from toucan.errors import MCP_RETRYABLE
from toucan.ids import make_id, schema_hash
from toucan.records import Server, Tool

logger = logging.getLogger(__name__)

AnySpec = StdioSpec | HttpSpec | SseSpec
RETRY_DELAY_S = 2.0  # a server that crashed or timed out gets a moment before the next attempt


class OnboardOutcome(BaseModel):
    """What onboarding one catalog entry produced: its server row and its tools."""

    server: Server
    tools: list[ListedTool] = Field(default_factory=list)


class ToolVersions(BaseModel):
    """What the store already holds for one server's tools: name -> {schema_hash: version}."""

    by_name: dict[str, dict[str, int]] = Field(default_factory=dict)


def choose_domain(
    spec: AnySpec, tool_texts: Iterable[str], categories: Sequence[str]
) -> tuple[str | None, str]:
    """Catalog label if it is one of the categories, else the keyword rule; with its source."""
    from_catalog = normalize_category(spec.domain, categories)
    if from_catalog:
        return from_catalog, "catalog"
    guessed = label_by_keywords([spec.name, spec.description, *tool_texts], categories)
    return (guessed, "keyword") if guessed else (None, "none")


def spec_summary(spec: AnySpec) -> dict[str, Any]:
    """The spec as stored on the server row, with secret config values removed."""
    dumped = spec.model_dump(mode="json", exclude={"tools", "config_values"})
    dumped["config_values"] = {
        k: ("***" if any(f.name == k and f.secret for f in spec.config) else v)
        for k, v in spec.config_values.items()
    }
    return dumped


def base_server_record(
    spec: AnySpec, categories: Sequence[str], tool_texts: Iterable[str]
) -> Server:
    domain, source = choose_domain(spec, tool_texts, categories)
    return Server(
        server_id=spec.server_id,
        name=spec.name,
        source=spec.source,
        transport=spec.transport,
        status="specs_only",
        domain=domain,
        domain_source=source,  # type: ignore[arg-type]
        secondary_domains=list(spec.secondary_domains),
        description=spec.description,
        spec=spec_summary(spec),
        needs_credentials=spec.missing_config(),
        license=spec.license,
        usage_count=spec.usage_count,
        featured=spec.featured,
    )


def listing_from_specs(tools: Sequence[ToolSpec]) -> ToolListing:
    """Declared tools judged as if a server had listed them (repaired, or rejected alone)."""
    return build_listing([[tool.as_listed() for tool in tools]])


def onboard_from_specs(spec: AnySpec, categories: Sequence[str]) -> OnboardOutcome:
    """--specs-only: store what the catalog declares, without connecting."""
    listing = listing_from_specs(spec.tools)
    tools = listing.tools
    server = base_server_record(spec, categories, _tool_texts(tools))
    update: dict[str, Any] = {
        "tool_count": len(tools),
        "notes": listing.notes,
        "rejected_tools": listing.rejected,
    }
    if not tools:
        update |= {
            "status": "rejected",
            "reason": "no_usable_tools" if listing.rejected else "no_tools_declared",
            "detail": "the catalog entry lists no usable tools",
        }
    return OnboardOutcome(server=server.model_copy(update=update), tools=tools)


def onboard_from_check(
    spec: AnySpec, check: ServerCheck, categories: Sequence[str]
) -> OnboardOutcome:
    """A live health check's outcome as a server row (ok or rejected with the check's reason)."""
    server = base_server_record(spec, categories, _tool_texts(check.tools))
    server = server.model_copy(
        update={
            "status": "ok" if check.status == "ok" else "rejected",
            "reason": check.reason,
            "detail": check.detail,
            "tool_count": len(check.tools),
            "connect_latency_ms": check.connect_latency_ms,
            "transport_used": check.transport_used,
            "notes": check.notes,
            "rejected_tools": check.rejected_tools,
            "sandbox": check.sandbox_mode,
        }
    )
    return OnboardOutcome(server=server, tools=check.tools if check.status == "ok" else [])


async def onboard_server(
    spec_data: dict[str, Any], mcp: dict[str, Any], categories: list[str], retries: int
) -> OnboardOutcome:
    """One catalog entry, live: connect, list tools, probe. A transient failure (a reason in
    `toucan.errors.MCP_RETRYABLE`, or an unexpected error) is tried again up to `retries`
    times; the last attempt's verdict is the row. Arguments are JSON so a batch crosses to a
    Dask worker."""
    spec = parse_server_spec(spec_data)
    mcp_config = McpConfig.model_validate(mcp)
    for attempt in range(retries + 1):
        raised = False
        try:
            async with make_pool(mcp_config) as pool:
                check = await check_server(spec, pool)
        except Exception as error:  # the stage edge: one server must not stop the others
            logger.warning("onboarding %s failed", spec.name, exc_info=True)
            check, raised = failed_check(spec, error), True
        transient = raised or check.reason in MCP_RETRYABLE
        if check.status == "ok" or not transient or attempt == retries:
            break
        await asyncio.sleep(RETRY_DELAY_S)
    return onboard_from_check(spec, check, categories)


def failed_check(spec: AnySpec, error: BaseException) -> ServerCheck:
    """An attempt that raised, as a rejected check with the best reason known."""
    return ServerCheck(
        server_id=spec.server_id,
        name=spec.name,
        status="rejected",
        reason=getattr(error, "reason", None) or "onboard_failed",
        detail=str(error)[:2000],
    )


def needs_credentials_outcome(spec: AnySpec, categories: Sequence[str]) -> OnboardOutcome:
    missing = spec.missing_config()
    server = base_server_record(spec, categories, _tool_texts(listing_from_specs(spec.tools).tools))
    server = server.model_copy(
        update={
            "status": "rejected",
            "reason": "needs_credentials",
            "detail": "required config without a value: " + ", ".join(missing),
        }
    )
    return OnboardOutcome(server=server)


def rejection_outcome(rejection: CatalogRejection) -> OnboardOutcome:
    """A catalog entry that did not even parse: one rejected row, keyed by where it stood."""
    name = rejection.name or f"{rejection.source}#{rejection.index}"
    server = Server(
        server_id=make_id("srv", "catalog", rejection.source, rejection.index, rejection.name),
        name=name,
        source="catalog",
        transport="unknown",
        status="rejected",
        reason=rejection.reason,
        detail=rejection.detail,
        catalog_path=rejection.source,
    )
    return OnboardOutcome(server=server)


def tool_records(
    server_id: str, tools: Sequence[ListedTool], known: ToolVersions, run_id: str | None
) -> tuple[list[Tool], list[str]]:
    """New Tool rows for schemas not seen before, and ids of rows that a new version supersedes.

    A tool whose schema hash is already stored adds nothing; a changed schema becomes the next
    version of that tool name.
    """
    new_rows: list[Tool] = []
    for tool in tools:
        seen = known.by_name.get(tool.name, {})
        digest = tool.schema_hash or schema_hash(tool.input_schema)
        if digest in seen:
            continue
        new_rows.append(
            Tool(
                tool_id=make_id("tool", server_id, tool.name, digest),
                server_id=server_id,
                name=tool.name,
                description=tool.description,
                input_schema=tool.input_schema,
                annotations=tool.annotations,
                schema_hash=digest,
                version=max(seen.values(), default=0) + 1,
                first_seen_run=run_id,
                repairs=tool.repairs,
                repair_detail=tool.repair_detail,
            )
        )
    superseded_names = [t.name for t in new_rows if t.version > 1]
    return new_rows, superseded_names


def _tool_texts(tools: Sequence[ListedTool]) -> list[str]:
    return [f"{t.name} {t.description[:200]}" for t in tools]
