"""Prompt budgets: how much of a tool catalog a prompt shows, and caps on a reply's free text.

Pure functions over records, driven by `models.prompt_budget` (toucan.config.PromptBudget).
Every limit that is None leaves its input untouched, so real providers see exactly what they
saw before; the `local` profile sets small limits for the embedded CPU model. Which tools are
kept is seeded by the item's id: the same item always sees the same tools (stable prompts,
stable cache keys), while different items of one server see different subsets.
"""

from __future__ import annotations

import copy
from collections.abc import Collection, Mapping, Sequence
from typing import Any, TypeVar

from mcp_env.limits import cut_text
from tasks.agent.naming import ExposedTool
from tasks.sampling import ServerView
from toucan.config import PromptBudget
from toucan.ids import content_hash
from toucan.records import Tool

# Free-text fields of structured replies, by the cap that bounds them.
REASONING_FIELDS = frozenset(
    {"reasoning", "server_analysis", "cross_server_workflow", "constraints", "context", "persona"}
)
QUESTION_FIELDS = frozenset({"question", "sub_questions"})

T = TypeVar("T", Tool, ExposedTool)


def pick_tools(tools: Sequence[T], keep: Collection[str], limit: int | None, seed: str) -> list[T]:
    """At most `limit` tools: those named in `keep` first, then others in an order seeded by
    `seed`; the result keeps the input order. `limit` None = all of them."""
    if limit is None or len(tools) <= limit:
        return list(tools)
    kept = [tool for tool in tools if tool.name in keep]
    others = sorted(
        (tool for tool in tools if tool.name not in keep),
        key=lambda tool: content_hash([seed, tool.name], 16),
    )
    chosen = {id(tool) for tool in [*kept, *others][: max(limit, len(kept))]}
    return [tool for tool in tools if id(tool) in chosen]


def budget_view(
    view: ServerView,
    budget: PromptBudget,
    seed: str,
    keep: Collection[str] = (),
    at_least: int = 0,
) -> ServerView:
    """A server as a synthesis or judge prompt shows it: at most `tools_per_server` tools but
    never fewer than `at_least` (a task asking for 3 tools must be shown 3), the `keep` names
    always among them, descriptions cut to `description_chars`."""
    limit = budget.tools_per_server
    limit = None if limit is None else max(limit, at_least)
    tools = pick_tools(view.tools, keep, limit, f"{seed}/{view.server_id}")
    chars = budget.description_chars
    if len(tools) == len(view.tools) and chars is None:
        return view
    server = view.server
    if chars is not None:
        server = server.model_copy(update={"description": cut_text(server.description, chars)})
    return ServerView(
        server=server,
        tools=tuple(
            tool.model_copy(update={"description": cut_text(tool.description, chars)})
            for tool in tools
        ),
    )


def shown_tools(views: Sequence[ServerView], originals: Mapping[str, ServerView]) -> dict[str, Any]:
    """Task metadata naming the tools shown, for the servers whose catalog was cut."""
    cut = {
        view.server_id: [tool.name for tool in view.tools]
        for view in views
        if len(view.tools) < len(originals[view.server_id].tools)
    }
    return {"shown_tools": cut} if cut else {}


def reply_caps(budget: PromptBudget) -> dict[str, dict[str, int]]:
    """JSON-schema length keywords per free-text field name of a structured reply (empty
    when the budget sets none)."""
    caps: dict[str, dict[str, int]] = {}
    for fields, keyword, limit in (
        (REASONING_FIELDS, "maxLength", budget.reasoning_chars),
        (QUESTION_FIELDS, "maxLength", budget.question_chars),
        (QUESTION_FIELDS, "minLength", budget.question_min_chars),
    ):
        if limit is not None:
            for name in fields:
                caps.setdefault(name, {})[keyword] = limit
    return caps


def cap_schema_fields(schema: Any, caps: Mapping[str, Mapping[str, int]]) -> Any:
    """A copy of a JSON schema where each string property named in `caps` (or array of
    strings) gets those length keywords. Constrained decoders (llama.cpp) then stop the field
    at its maxLength, so the JSON stays whole instead of being cut by max_tokens, and cannot
    leave a field with a minLength empty."""
    if isinstance(schema, list):
        return [cap_schema_fields(value, caps) for value in schema]
    if not isinstance(schema, dict):
        return schema
    capped = {key: cap_schema_fields(value, caps) for key, value in schema.items()}
    properties = capped.get("properties")
    if isinstance(properties, dict):
        for name, keywords in caps.items():
            field = properties.get(name)
            if not isinstance(field, dict):
                continue
            target = field.get("items") if field.get("type") == "array" else field
            if isinstance(target, dict) and target.get("type") == "string":
                target.update(keywords)
    return capped


def capped_response_format(response_format: dict[str, Any], budget: PromptBudget) -> dict[str, Any]:
    """`response_format` ({"type": "json_schema", ...}) with the budget's field caps applied;
    the same object when the budget sets none (real providers' requests stay as they were)."""
    caps = reply_caps(budget)
    schema = (response_format.get("json_schema") or {}).get("schema")
    if not caps or not isinstance(schema, dict):
        return response_format
    capped = copy.deepcopy(response_format)
    capped["json_schema"]["schema"] = cap_schema_fields(schema, caps)
    return capped


def with_item_count(
    response_format: dict[str, Any], field: str, low: int, high: int
) -> dict[str, Any]:
    """`response_format` with minItems/maxItems on a top-level array field, so a constrained
    decoder writes as many entries as the prompt asks for."""
    bounded = copy.deepcopy(response_format)
    bounded["json_schema"]["schema"]["properties"][field].update(minItems=low, maxItems=high)
    return bounded
