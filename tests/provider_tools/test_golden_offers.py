"""Golden: every quirk fixture's tools, offered to each provider family, meet that provider's
documented rules, lose no tool the provider could take, and keep the target tools."""

from __future__ import annotations

import pytest

from mcp_env.results import ListedTool
from tasks.agent.naming import ExposedTool, expose_tools
from tasks.tool_offer import ToolOffer, offer_tools, original_tools
from tests.provider_tools.documented_rules import (
    DOCUMENTED,
    fixtures,
    quirk_tools,
    request_violations,
)
from toucan.config import PromptBudget
from toucan.ids import schema_hash
from toucan.llm.tool_rules import OPENAI_STRICT, TOOL_RULES, ToolRules
from toucan.records import TargetTool

RULES = {**TOOL_RULES, "openai_strict": OPENAI_STRICT}


def exposed_fixture(fixture: str, rules: ToolRules) -> list[ExposedTool]:
    # the servers' raw schemas, not the listing's repairs: the normaliser must cope alone
    listed = [
        ListedTool(
            name=t["name"],
            description=t.get("description") or "",
            input_schema=t["inputSchema"] if isinstance(t.get("inputSchema"), dict) else {},
            schema_hash=schema_hash(t.get("inputSchema")),
        )
        for t in quirk_tools(fixture)
    ]
    return expose_tools([("srv_quirks", "quirks", listed)], rules=rules)


def offer_fixture(fixture: str, rules: ToolRules, target: str | None = None) -> ToolOffer:
    exposed = exposed_fixture(fixture, rules)
    target = target or exposed[-1].tool
    targets = [TargetTool(server_id="srv_quirks", server="quirks", tool=target)]
    return offer_tools(exposed, targets, PromptBudget(), "traj_golden", rules)


@pytest.mark.parametrize("family", sorted(RULES))
@pytest.mark.parametrize("fixture", fixtures())
def test_every_fixture_offered_to_every_provider_meets_its_documented_rules(
    fixture: str, family: str
) -> None:
    rules = RULES[family]
    offer = offer_fixture(fixture, rules)
    sent = [tool.openai_schema() for tool in offer.tools]
    assert request_violations(sent, rules.family) == []
    limit = DOCUMENTED[rules.family]["max_tools"]
    expected = len(quirk_tools(fixture)) if limit is None else min(limit, len(quirk_tools(fixture)))
    assert len(sent) == expected  # nothing lost that the provider could take
    assert quirk_tools(fixture)[-1]["name"] in {tool.tool for tool in offer.tools}  # the target


def test_a_150_tool_server_is_offered_128_with_the_target_and_a_recorded_seeded_choice() -> None:
    rules = TOOL_RULES["openai"]
    offer = offer_fixture("many_tools", rules, target="op_007")
    again = offer_fixture("many_tools", rules, target="op_007")
    names = [tool.name for tool in offer.tools]
    assert len(names) == 128 and "op_007" in names
    assert names == [tool.name for tool in again.tools]  # the choice is reproducible
    assert offer.record.model_dump() | {"notes": {}} == {
        "rules": "openai",
        "strict": False,
        "available": 150,
        "offered": 128,
        "limit": 128,
        "seed": "traj_golden",
        "notes": {},
    }
    exposed = exposed_fixture("many_tools", rules)
    other = offer_tools(exposed, [], PromptBudget(), "traj_other", rules)
    assert {t.name for t in other.tools} != set(names)  # another item, another seeded subset


def test_the_budget_is_an_extra_cap_below_the_providers() -> None:
    exposed = exposed_fixture("long_descriptions", TOOL_RULES["openai"])
    budget = PromptBudget(offered_tools=2, description_chars=50)
    offer = offer_tools(exposed, [], budget, "traj_1", TOOL_RULES["openai"])
    assert len(offer.tools) == 2 and offer.record.limit == 2
    for tool in offer.tools:
        function = tool.openai_schema()["function"]
        assert len(function["description"]) <= 50 and function["description"].endswith("...")
        assert len(function["parameters"]["properties"]["region"]["description"]) <= 50
        assert {"description_cut", "parameter_description_cut"} <= set(tool.definition_notes)


def test_long_descriptions_are_cut_for_openai_and_kept_whole_where_no_limit_is_documented() -> None:
    for family in ("openai", "anthropic", "gemini"):
        offer = offer_fixture("long_descriptions", TOOL_RULES[family])  # type: ignore[index]
        for tool in offer.tools:
            function = tool.openai_schema()["function"]
            texts = [function["description"]]
            texts.append(function["parameters"]["properties"]["region"]["description"])
            if family == "openai":
                assert all(1000 < len(t) <= 1024 and t.endswith("...") for t in texts)
            else:
                assert [len(t) for t in texts] == [20_000, 20_000]
            assert len(tool.description) == 20_000  # the server's own text is kept


def test_the_original_definitions_are_kept_beside_the_offered_ones() -> None:
    offer = offer_fixture("root_combinators", TOOL_RULES["anthropic"])
    originals = original_tools(offer.tools)
    by_name = {t["name"]: t for t in quirk_tools("root_combinators")}
    assert {name: o["inputSchema"] for name, o in originals.items()} == {
        name: by_name[name]["inputSchema"] for name in originals
    }
    assert offer.record.notes["union_root"] == ["root_any_of_lifted", "root_type_added"]


def test_an_extension_replays_its_base_offer_exactly() -> None:
    rules = TOOL_RULES["openai"]
    exposed = exposed_fixture("many_tools", rules)
    base = offer_tools(exposed, [], PromptBudget(), "traj_base", rules)
    again = offer_tools(
        exposed, [], PromptBudget(), "traj_ext", rules, {t.name for t in base.tools}
    )
    assert again.tools == base.tools and again.record.seed is None
