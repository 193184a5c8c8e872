"""LiteLLM turns the OpenAI-format tools we hand it into Anthropic's and Gemini's formats; what
comes out of its (pure, offline) translation of our definitions still meets those providers'
rules and keeps every parameter. Without the normaliser LiteLLM 1.110 keeps only a few root
keys for Anthropic, so a root `anyOf` reaches Claude as a tool without parameters."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

import pytest

from tasks.agent.tool_schema import provider_definition
from tests.provider_tools.documented_rules import (
    ANTHROPIC_ROOT_FIELDS,
    ROOT_COMBINATORS,
    fixtures,
    quirk_tools,
    schema_nodes,
)
from toucan.llm.tool_rules import TOOL_RULES


@pytest.fixture(autouse=True)
def quiet_litellm_typeddict_warning() -> Iterator[None]:
    """LiteLLM's TypedDicts with `ReadOnly` items make pydantic warn as its modules load."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*`ReadOnly` qualifier", category=UserWarning)
        yield


def anthropic_schema(tool: dict[str, Any]) -> dict[str, Any]:
    from litellm.llms.anthropic.chat.transformation import AnthropicConfig

    translated, _ = AnthropicConfig()._map_tool_helper(tool)  # type: ignore[arg-type]
    assert translated is not None
    return dict(translated["input_schema"])  # type: ignore[typeddict-item]


def gemini_parameters(tool: dict[str, Any]) -> dict[str, Any]:
    from litellm.llms.vertex_ai.gemini.vertex_and_google_ai_studio_gemini import (
        VertexGeminiConfig,
    )

    [mapped] = VertexGeminiConfig()._map_function([tool], {})
    [declaration] = mapped["function_declarations"]  # type: ignore[typeddict-item]
    return dict(declaration.get("parameters") or {})


def property_names(schema: dict[str, Any]) -> set[str]:
    return set(schema.get("properties") or {})


def source_property_names(schema: dict[str, Any]) -> set[str]:
    """Every parameter a server's schema names, at the root or in root alternatives."""
    names = property_names(schema)
    for key in ROOT_COMBINATORS:
        for alternative in schema.get(key) or []:
            names |= property_names(alternative)
    return names


@pytest.mark.parametrize("family", ["anthropic", "gemini"])
@pytest.mark.parametrize("fixture", fixtures())
def test_litellms_translation_of_our_tools_has_an_object_root_and_every_parameter(
    fixture: str, family: str
) -> None:
    translate = anthropic_schema if family == "anthropic" else gemini_parameters
    for tool in quirk_tools(fixture):
        ours, _ = provider_definition(
            tool["name"], tool["description"], tool["inputSchema"], TOOL_RULES[family]
        )
        schema = translate(ours)
        assert schema["type"] == "object" and not ROOT_COMBINATORS & set(schema)
        assert property_names(schema) == source_property_names(tool["inputSchema"])
        assert all("$ref" not in node for node in schema_nodes(schema))
        if family == "anthropic":
            assert set(schema) <= ANTHROPIC_ROOT_FIELDS


def test_without_the_normaliser_litellm_sends_claude_a_union_tool_without_parameters() -> None:
    [union] = [t for t in quirk_tools("root_combinators") if t["name"] == "union_root"]
    raw = {
        "type": "function",
        "function": {"name": "union_root", "parameters": union["inputSchema"]},
    }
    assert property_names(anthropic_schema(raw)) == set()  # what the normaliser prevents
    ours, _ = provider_definition("union_root", "", union["inputSchema"], TOOL_RULES["anthropic"])
    assert property_names(anthropic_schema(ours)) == {"city", "lat", "lon"}
