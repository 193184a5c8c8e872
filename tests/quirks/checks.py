"""What each quirk case checks of its trajectory beyond `ok`: the quirk-specific part of
"what a user expects of toucan" (tests/servers/quirks/README.md)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tests.provider_tools.documented_rules import ROOT_COMBINATORS, request_violations
from toucan.records import Tool, Trajectory
from toucan.store import Store

SAMPLED = "hello, summarised"  # the teacher's answer to the server's sampling request


@dataclass(frozen=True)
class Observed:
    """What one trajectory left behind: its row, the model requests, what the server received
    (RAW_LOG entries written during the run; none for HTTP servers) and the store."""

    row: Trajectory
    requests: list[dict[str, Any]]
    received: list[dict[str, Any]]
    store: Store

    def offered(self, request: int = 0) -> dict[str, dict[str, Any]]:
        """name -> function definition of the tools sent in one model request."""
        return {t["function"]["name"]: t["function"] for t in self.requests[request]["tools"]}

    def violations(self, family: str) -> list[str]:
        """How the tools of every model request break the provider family's documented rules."""
        return [v for r in self.requests for v in request_violations(r["tools"], family)]

    def tool_texts(self) -> list[str]:
        return [m["content"] for m in self.row.messages if m["role"] == "tool"]


def check_broken_ref(seen: Observed) -> None:
    assert seen.offered()["add_item"]["parameters"]["properties"]["item"] == {}  # opened
    assert seen.tool_texts() == ['add_item ok: {"item": {"sku": "A-1"}, "qty": 2}']
    assert seen.row.tool_call_log[0].notes == []  # the repaired schema could be checked


def check_root_combinators(seen: Observed) -> None:
    assert seen.violations("anthropic") == []
    assert set(seen.offered()) == {"find_user", "union_root", "allof_root", "oneof_root"}
    for function in seen.offered().values():
        assert function["parameters"]["type"] == "object"
        assert ROOT_COMBINATORS & set(function["parameters"]) == set()


def check_untyped_noarg(seen: Observed) -> None:
    assert set(seen.offered()) == {"get_status", "list_all"}
    assert seen.offered()["list_all"]["parameters"]["type"] == "object"


def check_output_schema(seen: Observed) -> None:
    assert set(seen.offered()) == {
        "out_no_type",
        "out_array",
        "out_missing",
        "out_ok",
        "out_ok_structured_only",
    }  # a bad output schema costs no tool
    assert [m["role"] for m in seen.row.messages] == [
        "system",
        "user",
        "assistant",
        "tool",
        "assistant",
    ]
    assert seen.tool_texts() == ["value is 7"]  # the text result, kept
    assert seen.row.tool_call_log[0].notes == ["structured_content_missing"]


def check_stuck_cursor(seen: Observed) -> None:
    for request in seen.requests:  # each tool once, in every request
        names = [t["function"]["name"] for t in request["tools"]]
        assert sorted(names) == ["stuck_000", "stuck_001", "stuck_002"]


def check_many_tools(seen: Observed) -> None:
    assert seen.violations("openai") == []
    assert len(seen.offered()) == 128 and "op_149" in seen.offered()
    assert seen.row.metadata["tool_offer"]["available"] == 150


def check_long_descriptions(seen: Observed) -> None:
    assert seen.violations("openai") == []  # descriptions within 1,024 characters
    assert len(seen.offered()) == 3
    assert {len(t["description"]) for t in seen.row.original_tools.values()} == {20_000}


def check_sampling_elicitation(seen: Observed) -> None:
    exchanges = seen.row.metadata["server_requests"]
    assert [(e["kind"], e["answered_by"], e["error_reason"]) for e in exchanges] == [
        ("sampling", "Teacher-A", None),
        ("elicitation", "Gen", None),  # the simulated user
    ]
    sampled, confirmed = seen.tool_texts()
    assert SAMPLED in sampled and '"action": "accept"' in confirmed


def check_list_changed(seen: Observed) -> None:
    assert [set(seen.offered(n)) for n in range(3)] == [
        {"login", "old_tool"},
        {"login", "new_tool"},
        {"login", "new_tool"},
    ]
    [change] = seen.row.metadata["tool_list_changes"]
    assert (change["added"], change["removed"], change["changed"]) == (
        ["new_tool"],
        ["old_tool"],
        ["login"],
    )
    current = {(t.name, t.version) for t in seen.store.select(Tool, "current")}
    assert {("login", 2), ("new_tool", 1)} <= current  # the change reached the store


def check_progress(seen: Observed) -> None:
    assert seen.tool_texts() == ["long_job ok: {}"]
    [token] = [
        e["progress_token_from_client"] for e in seen.received if "progress_token_from_client" in e
    ]
    assert token is not None  # the call carried a progress token, so progress could count


def check_added_over_http(seen: Observed) -> None:
    assert seen.tool_texts() == ["42"]  # computed by the server, so the call reached it
