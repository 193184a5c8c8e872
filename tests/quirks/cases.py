"""Every fixture of the MCP quirk collection as a case: its catalog entry, the onboarding
verdict the collection's README expects ("what a user expects of toucan"), and a trajectory
whose scripted model calls the tool that exercises the quirk, with the quirk's own check."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.fake_llm import Rule
from tests.mcp_env.conftest import QUIRKS, quirk_spec, served_spec
from tests.quirks.checks import (
    SAMPLED,
    Observed,
    check_added_over_http,
    check_broken_ref,
    check_list_changed,
    check_long_descriptions,
    check_many_tools,
    check_output_schema,
    check_progress,
    check_root_combinators,
    check_sampling_elicitation,
    check_stuck_cursor,
    check_untyped_noarg,
)
from toucan.records import Server, Tool

# the files of ../shared/cases/mcp-quirks (tests must not read it), each copied into
# tests/servers/quirks (http_or_sse_server.py as ruff formats it); rawserver.py, which serves
# the JSON ones, is there too; progress_short.json is progress.json scaled down to test speed
COLLECTION = (
    "broken_ref.json",
    "root_combinators.json",
    "untyped_noarg.json",
    "output_schema.json",
    "stuck_cursor.json",
    "many_tools.json",
    "long_descriptions.json",
    "sampling_elicitation.json",
    "list_changed.json",
    "progress.json",
    "http_or_sse_server.py",
)
# progress_short.json: a 3 s job with progress every 0.4 s, called with a 1.5 s idle timeout
PROGRESS_MCP = {"call_timeout_s": 1.5, "call_timeout_max_s": 10}
Calls = list[list[tuple[str, dict[str, Any]]]]


@dataclass(frozen=True)
class QuirkCase:
    """One fixture (`fixture`: its file in the collection) served as catalog entry `name`."""

    fixture: str
    name: str
    entry: Callable[[Path], dict[str, Any]]  # the catalog entry, given a folder for RAW_LOG
    verdict: dict[str, Any]  # the server row as `verdict_of` shows it
    calls: Calls = field(default_factory=list)  # the model's calls per turn; [] = none
    check: Callable[[Observed], None] | None = None
    teacher: dict[str, Any] = field(default_factory=dict)  # e.g. the provider's tool rules
    mcp: dict[str, Any] = field(default_factory=dict)
    rules: list[Rule] = field(default_factory=list)  # replies to the server's own requests


def verdict_of(server: Server, tools: list[Tool]) -> dict[str, Any]:
    """The onboarding verdict of one server row and its current tools, as cases spell it."""
    return {
        "status": server.status,
        "reason": server.reason,
        "transport_used": server.transport_used,
        "notes": server.notes,
        "tools": server.tool_count,
        "rejected_tools": [(t.name, t.reason) for t in server.rejected_tools],
        "repairs": {t.name: t.repairs for t in tools if t.repairs},
    }


def ok(
    tools: int,
    repairs: dict[str, list[str]] | None = None,
    *,
    reason: str | None = "schemas_only",  # no read-only tool to probe: the schemas were checked
    notes: list[str] | None = None,
    transport: str = "stdio",
) -> dict[str, Any]:
    """The verdict of a server onboarded with `tools` usable tools."""
    return {
        "status": "ok",
        "reason": reason,
        "transport_used": transport,
        "notes": notes or [],
        "tools": tools,
        "rejected_tools": [],
        "repairs": repairs or {},
    }


def rejected(reason: str) -> dict[str, Any]:
    """The verdict of a server that never connected, rejected with `reason`."""
    return ok(0, reason=reason) | {"status": "rejected", "transport_used": None}


def stdio(name: str, config: str | None = None) -> Callable[[Path], dict[str, Any]]:
    """rawserver.py on tests/servers/quirks/<config or name>.json as server `name`, with a
    RAW_LOG of what it receives in the given folder."""

    def entry(folder: Path) -> dict[str, Any]:
        spec = quirk_spec(config or name, folder / f"{name}.log", name=name)
        return spec.model_dump(mode="json")

    return entry


def http_case(
    speaks: str,
    path: str,
    declared: str | None,
    verdict: dict[str, Any],
    calls: Calls | None = None,
) -> QuirkCase:
    """http_or_sse_server.py speaking `speaks` at `path`, declared as `declared` (None: a
    bare url); by default the model adds 2 and 40 with its one tool."""
    name = f"{speaks}-at-{path.strip('/')}-declared-{declared or 'bare-url'}"
    return QuirkCase(
        "http_or_sse_server.py",
        name,
        lambda folder: served_spec(speaks, path, declared) | {"name": name},
        verdict,
        [[("add", {"a": 2, "b": 40})]] if calls is None else calls,
        check_added_over_http,
    )


CASES = [
    QuirkCase(
        "broken_ref.json",
        "broken_ref",
        stdio("broken_ref"),
        ok(2, {"add_item": ["unresolved_ref"], "legacy_defs": ["unresolved_ref"]}),
        [[("add_item", {"item": {"sku": "A-1"}, "qty": 2})]],
        check_broken_ref,
    ),
    QuirkCase(
        "root_combinators.json",
        "root_combinators",
        stdio("root_combinators"),
        ok(4, {"union_root": ["missing_root_type"], "allof_root": ["missing_root_type"]}),
        [[("union_root", {"city": "Paris"})]],
        check_root_combinators,
        teacher={"tool_rules": "anthropic"},
    ),
    QuirkCase(
        "untyped_noarg.json",
        "untyped_noarg",
        stdio("untyped_noarg"),
        ok(2, {"list_all": ["missing_root_type"]}),
        [[("list_all", {})]],
        check_untyped_noarg,
    ),
    QuirkCase(
        "output_schema.json",
        "output_schema",
        stdio("output_schema"),
        ok(5, {"out_no_type": ["output_schema_dropped"], "out_array": ["output_schema_dropped"]}),
        [[("out_missing", {})]],
        check_output_schema,
    ),
    QuirkCase(
        "stuck_cursor.json",
        "stuck_cursor",
        stdio("stuck_cursor"),
        ok(3, notes=["stuck_cursor", "duplicate_tool_names"]),
        [[("stuck_002", {"arg": "x"})]],
        check_stuck_cursor,
    ),
    QuirkCase(
        "many_tools.json",
        "many_tools",
        stdio("many_tools"),
        ok(150),
        [[("op_149", {"arg": "x"})]],
        check_many_tools,
        teacher={"tool_rules": "openai"},
    ),
    QuirkCase(
        "long_descriptions.json",
        "long_descriptions",
        stdio("long_descriptions"),
        ok(3),
        [[("report_1", {"region": "EU"})]],
        check_long_descriptions,
        teacher={"tool_rules": "openai"},
    ),
    QuirkCase(
        "sampling_elicitation.json",
        "sampling_elicitation",
        stdio("sampling_elicitation"),
        ok(2),
        # one call a turn: the fixture's server ignores a second request while it waits
        [[("summarise_with_llm", {})], [("confirm_delete", {})]],
        check_sampling_elicitation,
        rules=[
            Rule(contains="Summarise: hello", text=SAMPLED),
            Rule(contains="Please confirm", answer={"action": "accept", "content": {"ok": True}}),
        ],
    ),
    QuirkCase(
        "list_changed.json",
        "list_changed",
        stdio("list_changed"),
        ok(2, reason=None),  # probed with `login`, its read-only no-argument tool
        [[("login", {})], [("new_tool", {"b": "y"})]],
        check_list_changed,
    ),
    QuirkCase(
        "progress.json",
        "progress",
        stdio("progress", "progress_short"),
        ok(2, reason=None),  # probed with `long_job`
        [[("long_job", {})]],
        check_progress,
        mcp=PROGRESS_MCP,
    ),
    # http_or_sse_server.py declared as the other transport both ways, and at a bare url
    http_case("sse", "/sse", "streamable-http", ok(1, notes=["wrong_transport"], transport="sse")),
    http_case(
        "streamable-http",
        "/mcp",
        "sse",
        ok(1, notes=["wrong_transport"], transport="streamable-http"),
    ),
    http_case("sse", "/sse", None, ok(1, transport="sse")),  # a bare url: SSE is no fault
    # neither transport answers at the url: the failure names that cause
    http_case("sse", "/nowhere", None, rejected("no_mcp_endpoint"), calls=[]),
]


def fixture_file_names() -> list[str]:
    """The collection's files that the cases use, for the check that each one is here."""
    return sorted({case.fixture for case in CASES})


def read_config(name: str) -> dict[str, Any]:
    return json.loads((QUIRKS / name).read_text())
