"""What each model provider accepts as a tool definition: one table, and the deployment's entry.

Every rule is data in `TOOL_RULES`, with the source of each limit beside it. A deployment's
family comes from its LiteLLM model string (or `tool_rules` in its config when the string does
not tell, e.g. an OpenAI-compatible gateway in front of Claude); the `local` profile serves
every deployment from the embedded llama-cpp server, an OpenAI-compatible server. The tool
definitions themselves are rewritten by `tasks/agent/tool_schema.py`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from toucan.config import ModelDeployment, ModelsConfig
from toucan.llm.providers import UnknownProvider, split_provider

ToolFamily = Literal["openai", "anthropic", "gemini", "openai_compatible"]

# OpenAI: "a-z, A-Z, 0-9, or contain underscores and dashes, with a maximum length of 64"
# (API reference, Chat Completions `tools[].function.name`; same for the Responses API).
# Anthropic: "^[a-zA-Z0-9_-]{1,64}$" (https://docs.anthropic.com/en/docs/agents-and-tools/
# tool-use/implement-tool-use, "Specifying client tools", `name`).
PORTABLE_NAME = r"^[a-zA-Z0-9_-]{1,64}$"
# Gemini: "Must start with a letter or an underscore. Must be a-z, A-Z, 0-9, or contain
# underscores, dots and dashes, with a maximum length of 64" (https://ai.google.dev/api/
# caching#FunctionDeclaration and Vertex AI `FunctionDeclaration.name`; colons are allowed too).
GEMINI_NAME = r"^[a-zA-Z_][a-zA-Z0-9_.:-]{0,63}$"

# Gemini's `Schema` is "a select subset of an OpenAPI 3.0 schema object"; any other key is
# refused with `Invalid JSON payload received. Unknown name "..."` (https://ai.google.dev/api/
# caching#Schema; the field list of the `Schema` type of the google-genai SDK).
GEMINI_KEYWORDS = frozenset(
    {
        "type",
        "format",
        "title",
        "description",
        "nullable",
        "enum",
        "maxItems",
        "minItems",
        "properties",
        "required",
        "minProperties",
        "maxProperties",
        "minLength",
        "maxLength",
        "pattern",
        "example",
        "anyOf",
        "propertyOrdering",
        "default",
        "items",
        "minimum",
        "maximum",
    }
)
# OpenAI strict mode, "Supported schemas" of https://platform.openai.com/docs/guides/
# structured-outputs: these keywords only; every object has `additionalProperties: false` and
# lists every property in `required`; the root is an object, not `anyOf`; at most 5000 object
# properties and 10 levels of nesting in all. `default` and `allOf` are refused.
OPENAI_STRICT_KEYWORDS = frozenset(
    {
        "type",
        "properties",
        "required",
        "additionalProperties",
        "items",
        "enum",
        "const",
        "anyOf",
        "description",
        "title",
        "pattern",
        "format",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "multipleOf",
        "minItems",
        "maxItems",
    }
)
OPENAI_STRICT_MAX_PROPERTIES = 5000
OPENAI_STRICT_MAX_DEPTH = 10
# Anthropic reads only these keys at the root of `input_schema` (LiteLLM drops the rest when it
# translates, so a root `anyOf` silently loses every parameter); combinators at the root are
# refused: "input_schema does not support oneOf, allOf, or anyOf at the top level" (API error).
ANTHROPIC_ROOT_KEYS = frozenset({"type", "properties", "required", "additionalProperties"})


class ToolRules(BaseModel):
    """One provider family's rules for a tool definition (None = no documented limit)."""

    model_config = ConfigDict(frozen=True)

    family: ToolFamily
    name_pattern: str = PORTABLE_NAME
    name_max_chars: int = 64
    max_tools: int | None = None  # tool definitions per request
    description_chars: int | None = None  # per function description
    parameter_description_chars: int | None = None  # per description inside the schema
    lift_root_combinators: bool = True  # anyOf/oneOf/allOf at the root become one object
    root_keys: frozenset[str] | None = None  # keys allowed at the root of `parameters`
    keywords: frozenset[str] | None = None  # keywords allowed anywhere in `parameters`
    openapi_subset: bool = False  # one `type` per schema, `nullable`, string enums (Gemini)
    strict: bool = False  # OpenAI strict mode: closed objects, every property required


TOOL_RULES: dict[ToolFamily, ToolRules] = {
    # 128 tools: API reference, Chat Completions `tools` ("A max of 128 functions are
    # supported"; error `array_above_max_length`). 1,024 characters per function description:
    # error `string_above_max_length` on `tools[i].function.description`. Parameter
    # descriptions have no documented limit; ours keeps one within the function's.
    "openai": ToolRules(
        family="openai",
        max_tools=128,
        description_chars=1024,
        parameter_description_chars=1024,
    ),
    # No documented tool count or description limit; the root rules are above.
    "anthropic": ToolRules(family="anthropic", root_keys=ANTHROPIC_ROOT_KEYS),
    # "Maximum 128 function declarations can be provided" (Vertex AI v1beta1 `Tool.
    # functionDeclarations`); the schema subset and name rule are above.
    "gemini": ToolRules(
        family="gemini",
        name_pattern=GEMINI_NAME,
        max_tools=128,
        keywords=GEMINI_KEYWORDS,
        openapi_subset=True,
    ),
    # vLLM, the embedded llama-cpp server and other OpenAI-compatible servers take JSON
    # schema as is, and their grammar decoders enforce root combinators, so those stay.
    "openai_compatible": ToolRules(family="openai_compatible", lift_root_combinators=False),
}
# strict mode's keyword rules are applied by tasks/agent/strict_schema.py, which falls back to
# the non-strict definition when a schema cannot be made strict without changing its meaning
OPENAI_STRICT = TOOL_RULES["openai"].model_copy(update={"strict": True})
DEFAULT_RULES = TOOL_RULES["openai_compatible"]
OPENAI_HOSTS = ("api.openai.com", "openai.azure.com")


def tool_family(deployment: ModelDeployment, route_to_local: bool = False) -> ToolFamily:
    """The provider family whose rules a deployment's tool definitions must meet.

    `tool_rules` in the deployment's config wins; the `local` profile's embedded server is
    OpenAI-compatible; otherwise LiteLLM's provider and model name decide (Claude on Bedrock,
    Vertex AI or OpenRouter is Anthropic; Gemini anywhere is Gemini). An `openai/` model with
    an `api_base` of its own is a self-hosted OpenAI-compatible server, not OpenAI.
    """
    if deployment.tool_rules is not None:
        return deployment.tool_rules
    if route_to_local:
        return "openai_compatible"
    try:
        model, provider, _ = split_provider(deployment.model, deployment.api_base)
    except UnknownProvider:  # nothing says it is stricter
        return "openai_compatible"
    name = model.lower()
    if provider == "anthropic" or "claude" in name:
        return "anthropic"
    if provider == "gemini" or "gemini" in name:
        return "gemini"
    own_base = deployment.api_base and not any(h in deployment.api_base for h in OPENAI_HOSTS)
    if (provider in ("openai", "azure") and not own_base) or name.startswith("openai/"):
        return "openai"
    return "openai_compatible"


def rules_for(models: ModelsConfig, deployment_name: str) -> ToolRules:
    """The rules for the deployment named `deployment_name` (strict when its config asks and
    its provider is OpenAI). An unknown name gets the OpenAI-compatible rules."""
    deployment = next((d for d in models.all() if d.name == deployment_name), None)
    if deployment is None:
        return DEFAULT_RULES
    family = tool_family(deployment, models.route_to_local)
    if family == "openai" and deployment.strict_tools:
        return OPENAI_STRICT
    return TOOL_RULES[family]
