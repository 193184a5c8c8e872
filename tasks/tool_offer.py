"""What a teacher is offered: its task's tools within the provider's rules and the prompt
budget, each as the definition that provider accepts, and a record of the choice.

The provider's limits (toucan/llm/tool_rules.py) always apply, in every profile;
`models.prompt_budget` is an extra, stricter user cap on top. When a server has more tools
than the limit, the task's target tools are always offered and the rest is a choice seeded
by the item's id (`pick_tools`), recorded on the row with what each definition changed.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from pydantic import BaseModel, Field

from tasks.agent.naming import ExposedTool
from tasks.agent.tool_schema import provider_definition, smallest
from tasks.prompt_budget import pick_tools
from toucan.config import PromptBudget
from toucan.llm.tool_rules import DEFAULT_RULES, ToolRules
from toucan.records import TargetTool


class OfferRecord(BaseModel):
    """How an offer was made, stored as the trajectory's `metadata.tool_offer`."""

    rules: str  # the provider family whose rules applied (toucan/llm/tool_rules.py)
    strict: bool  # definitions made for the provider's strict mode
    available: int  # tools listed
    offered: int
    limit: int | None  # the smaller of the provider's and the budget's cap; None = none
    seed: str | None  # the seed of the choice; None when an earlier offer was replayed
    notes: dict[str, list[str]] = Field(default_factory=dict)  # exposed name -> changes


class ToolOffer(BaseModel):
    """The offered tools (each with its `definition`) and the record of the offer."""

    tools: list[ExposedTool]
    record: OfferRecord


def define_tool(tool: ExposedTool, rules: ToolRules, description_chars: int | None) -> ExposedTool:
    """`tool` with the definition its provider accepts and the notes of what that changed."""
    definition, notes = provider_definition(
        tool.name, tool.description, tool.input_schema, rules, description_chars
    )
    return tool.model_copy(update={"definition": definition, "definition_notes": tuple(notes)})


def offer_tools(
    exposed: Sequence[ExposedTool],
    targets: Sequence[TargetTool],
    budget: PromptBudget,
    seed: str,
    rules: ToolRules = DEFAULT_RULES,
    only: Collection[str] | None = None,
) -> ToolOffer:
    """The task's target tools plus others up to the smaller of the provider's `max_tools` and
    the budget's `offered_tools` (seeded by `seed`), each defined for `rules` with
    descriptions within both limits. `only` (exposed names) replays an earlier offer, e.g. the
    base trajectory of a multi-turn extension."""
    wanted = {(target.server_id, target.tool) for target in targets}
    keep = {tool.name for tool in exposed if (tool.server_id, tool.tool) in wanted}
    limit = smallest(budget.offered_tools, rules.max_tools)
    if only is not None:
        offered = [tool for tool in exposed if tool.name in only]
    else:
        offered = pick_tools(exposed, keep, limit, seed)
    if rules.max_tools is not None and len(offered) > rules.max_tools:
        # more targets than the provider takes: a request it would refuse helps no one
        offered = sorted(offered, key=lambda tool: tool.name not in keep)[: rules.max_tools]
    defined = [define_tool(tool, rules, budget.description_chars) for tool in offered]
    record = OfferRecord(
        rules=rules.family,
        strict=rules.strict,
        available=len(exposed),
        offered=len(defined),
        limit=limit,
        seed=None if only is not None else seed,
        notes={tool.name: list(tool.definition_notes) for tool in defined if tool.definition_notes},
    )
    return ToolOffer(tools=defined, record=record)


def original_tools(exposed: Sequence[ExposedTool]) -> dict[str, dict[str, Any]]:
    """The server's own definitions of the offered tools, by exposed name, in MCP's terms
    (`name` as the server calls it, `description`, `inputSchema`)."""
    return {
        tool.name: {
            "name": tool.tool,
            "description": tool.description,
            "inputSchema": tool.input_schema,
        }
        for tool in exposed
    }
