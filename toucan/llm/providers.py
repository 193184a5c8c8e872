"""Which provider serves a LiteLLM model string, read without importing LiteLLM when possible.

Importing LiteLLM costs 4-5 s of start-up (most of a stage's time to its first request), so it
is loaded by `load_litellm` only when a deployment really goes through it. A model string with
a provider prefix the direct transport knows (`openai/`, `together_ai/`, ...) or one of the
families the tool rules single out (`anthropic/`, `gemini/`) is split here exactly as LiteLLM's
`get_llm_provider` splits it (tests/llm/test_providers.py checks every such model of LiteLLM's
price map); anything else is asked of LiteLLM.
"""

from __future__ import annotations

from types import ModuleType

# LiteLLM provider -> default base url, for providers that speak the OpenAI chat API.
OPENAI_COMPATIBLE: dict[str, str | None] = {
    "openai": "https://api.openai.com/v1",
    "custom_openai": None,
    "hosted_vllm": None,
    "together_ai": "https://api.together.xyz/v1",
    "mistral": "https://api.mistral.ai/v1",
    "moonshot": "https://api.moonshot.ai/v1",
    "openrouter": "https://openrouter.ai/api/v1",
    "deepseek": "https://api.deepseek.com/v1",
    "groq": "https://api.groq.com/openai/v1",
    "fireworks_ai": "https://api.fireworks.ai/inference/v1",
    "deepinfra": "https://api.deepinfra.com/v1/openai",
    "xai": "https://api.x.ai/v1",
}
# prefixes split here without LiteLLM: the above, and the families tool_rules.py tells apart
KNOWN_PREFIXES = frozenset({*OPENAI_COMPATIBLE, "anthropic", "gemini"})


class UnknownProvider(Exception):
    """LiteLLM cannot say which provider serves a model string."""


def split_provider(model_string: str, api_base: str | None = None) -> tuple[str, str, str | None]:
    """(the provider's model id, LiteLLM's provider name, the base url LiteLLM knows for it or
    None), e.g. "openai/gpt-4o-mini" -> ("gpt-4o-mini", "openai", None). Known prefixes are
    read here (base None: `OPENAI_COMPATIBLE` has ours); any other string is asked of LiteLLM
    (imported then). Raises UnknownProvider when LiteLLM does not know it either."""
    prefix, _, model = model_string.partition("/")
    if model and prefix in KNOWN_PREFIXES:
        return model, prefix, None
    litellm = load_litellm()
    try:
        model, provider, _, base = litellm.get_llm_provider(model_string, api_base=api_base)
    except Exception as error:  # LiteLLM raises its own BadRequestError or a bare Exception
        raise UnknownProvider(f"{model_string}: {error}") from error
    return model, provider, base


def load_litellm() -> ModuleType:
    """LiteLLM, imported on first use and set up the way toucan uses it (idempotent)."""
    import litellm

    litellm.suppress_debug_info = True
    # a provider without response_format still answers; we parse leniently
    litellm.drop_params = True
    return litellm
