"""Prompt budgets as pure functions: which tools a prompt shows and the maxLength caps a
constrained decoder stops at (what a teacher is offered: tests/provider_tools/)."""

from __future__ import annotations

import pytest

from tasks.diversify import REPLY_FORMAT as DIVERSIFY_FORMAT
from tasks.filter_tasks import JUDGE_RESPONSE_FORMAT
from tasks.multi_turn import SPLIT_FORMAT
from tasks.prompt_budget import (
    budget_view,
    capped_response_format,
    cut_text,
    pick_tools,
    shown_tools,
)
from tasks.sampling import ServerView
from toucan.config import PromptBudget, load_settings
from toucan.errors import ConfigError
from toucan.records import Server, Tool

LONG = "word " * 100


def make_view(tools: int = 12, server_id: str = "srv_1") -> ServerView:
    server = Server(
        server_id=server_id,
        name="Files",
        source="fleet",
        transport="stdio",
        status="ok",
        description=LONG,
    )
    return ServerView(
        server=server,
        tools=tuple(
            Tool(
                tool_id=f"tool_{i}",
                server_id=server_id,
                name=f"tool_{i:02d}",
                description=LONG,
                schema_hash=f"h{i}",
            )
            for i in range(tools)
        ),
    )


def test_cut_text_keeps_short_text_and_cuts_long_text_to_the_limit_with_an_ellipsis() -> None:
    assert cut_text("short", 10) == "short"
    assert cut_text(LONG, None) == LONG
    cut = cut_text(LONG, 40)
    assert len(cut) <= 40 and cut.endswith("...")


def test_pick_tools_keeps_the_named_tools_fills_up_by_seed_and_keeps_input_order() -> None:
    tools = make_view(12).tools
    picked = pick_tools(tools, {"tool_11", "tool_07"}, 4, seed="a")
    names = [t.name for t in picked]
    assert len(names) == 4 and {"tool_11", "tool_07"} <= set(names)
    assert names == sorted(names)
    assert pick_tools(tools, set(), 4, seed="a") == pick_tools(tools, set(), 4, seed="a")
    subsets = {tuple(t.name for t in pick_tools(tools, set(), 4, seed=str(s))) for s in range(8)}
    assert len(subsets) > 1  # different items see different tools
    assert pick_tools(tools, set(), None, seed="a") == list(tools)


def test_more_kept_tools_than_the_limit_are_all_kept() -> None:
    tools = make_view(6).tools
    keep = {"tool_00", "tool_01", "tool_02"}
    assert {t.name for t in pick_tools(tools, keep, 2, seed="a")} == keep


def test_budget_view_cuts_tools_and_descriptions_and_an_empty_budget_changes_nothing() -> None:
    view = make_view(12)
    assert budget_view(view, PromptBudget(), "seed") is view
    small = budget_view(view, PromptBudget(tools_per_server=5, description_chars=30), "seed")
    assert len(small.tools) == 5
    assert all(len(t.description) <= 30 for t in small.tools)
    assert len(small.server.description) <= 30
    assert shown_tools([small], {view.server_id: view}) == {
        "shown_tools": {view.server_id: [t.name for t in small.tools]}
    }
    assert shown_tools([view], {view.server_id: view}) == {}


def test_budget_view_shows_at_least_as_many_tools_as_the_task_needs() -> None:
    view = make_view(12)
    assert len(budget_view(view, PromptBudget(tools_per_server=2), "s", at_least=3).tools) == 3


def test_reply_caps_reach_nested_reasoning_fields_and_question_lists() -> None:
    budget = PromptBudget(reasoning_chars=150, question_chars=250)
    judge = capped_response_format(JUDGE_RESPONSE_FORMAT, budget)["json_schema"]["schema"]
    assert judge["$defs"]["JudgedScore"]["properties"]["reasoning"]["maxLength"] == 150
    assert "maxLength" not in str(JUDGE_RESPONSE_FORMAT)  # the shared constant is untouched
    split = capped_response_format(SPLIT_FORMAT, budget)["json_schema"]["schema"]
    assert split["properties"]["sub_questions"]["items"]["maxLength"] == 250
    variation = capped_response_format(DIVERSIFY_FORMAT, budget)["json_schema"]["schema"]
    fields = variation["$defs"]["Variation"]["properties"]
    assert fields["question"]["maxLength"] == 250 and fields["context"]["maxLength"] == 150


def test_a_question_minimum_keeps_a_constrained_decoder_from_leaving_it_empty() -> None:
    budget = PromptBudget(question_chars=250, question_min_chars=20)
    split = capped_response_format(SPLIT_FORMAT, budget)["json_schema"]["schema"]
    assert split["properties"]["sub_questions"]["items"] == {
        "type": "string",
        "maxLength": 250,
        "minLength": 20,
    }


def test_an_empty_budget_returns_the_same_response_format_object() -> None:
    assert capped_response_format(JUDGE_RESPONSE_FORMAT, PromptBudget()) is JUDGE_RESPONSE_FORMAT


def test_the_local_profile_sets_budgets_and_the_cloud_profile_sets_none() -> None:
    local = load_settings(profile="local").models.prompt_budget
    assert local.tools_per_server and local.offered_tools and local.description_chars
    assert local.reasoning_chars and local.question_chars
    assert load_settings(profile="cloud").models.prompt_budget == PromptBudget()


def test_a_misspelt_budget_field_fails_at_load() -> None:
    with pytest.raises(ConfigError):
        load_settings(
            profile="local", overrides={"models": {"prompt_budget": {"tools_per_srever": 3}}}
        )
