"""Every profile applies its provider's rules: the family comes from the deployment's LiteLLM
model string, the `local` profile's embedded server is OpenAI-compatible, config can say."""

from __future__ import annotations

import pytest

from toucan.config import ModelDeployment, load_settings
from toucan.llm.tool_rules import OPENAI_STRICT, TOOL_RULES, rules_for, tool_family


@pytest.mark.parametrize(
    ("model", "api_base", "family"),
    [
        ("openai/gpt-4.5-preview", None, "openai"),
        ("azure/gpt-4o", None, "openai"),
        ("openrouter/openai/gpt-4o", None, "openai"),
        ("anthropic/claude-3-opus-20240229", None, "anthropic"),
        ("bedrock/anthropic.claude-3-opus-20240229-v1:0", None, "anthropic"),
        ("vertex_ai/claude-3-opus@20240229", None, "anthropic"),
        ("openrouter/anthropic/claude-3-opus", None, "anthropic"),
        ("gemini/gemini-2.0-flash", None, "gemini"),
        ("vertex_ai/gemini-1.5-pro", None, "gemini"),
        ("moonshot/kimi-k2-turbo-preview", None, "openai_compatible"),
        ("together_ai/meta-llama/Llama-3-70b-chat-hf", None, "openai_compatible"),
        ("openai/served-by-vllm", "http://127.0.0.1:8000/v1", "openai_compatible"),
        ("hosted_vllm/qwen", "http://127.0.0.1:8000/v1", "openai_compatible"),
        ("no-such-provider-model", None, "openai_compatible"),
    ],
)
def test_the_family_comes_from_the_litellm_model_string(
    model: str, api_base: str | None, family: str
) -> None:
    assert tool_family(ModelDeployment(name="d", model=model, api_base=api_base)) == family


def test_config_names_the_family_when_the_model_string_cannot() -> None:
    gateway = ModelDeployment(
        name="d", model="openai/claude-via-gateway", api_base="http://gw/v1", tool_rules="anthropic"
    )
    assert tool_family(gateway) == "anthropic"


def test_the_shipped_teachers_get_their_providers_rules_in_the_cloud_profile() -> None:
    models = load_settings(profile="cloud").models
    assert rules_for(models, "GPT-4.5-Turbo") == TOOL_RULES["openai"]
    assert rules_for(models, "Claude-3-Opus") == TOOL_RULES["anthropic"]
    assert rules_for(models, "Kimi-K2-Turbo") == TOOL_RULES["openai_compatible"]
    assert rules_for(models, "no-such-deployment") == TOOL_RULES["openai_compatible"]


def test_the_local_profile_serves_every_teacher_from_an_openai_compatible_server() -> None:
    models = load_settings(profile="local").models
    assert {rules_for(models, d.name).family for d in models.teachers} == {"openai_compatible"}


def test_strict_tools_is_openais_strict_mode_and_ignored_elsewhere() -> None:
    overrides = {
        "models": {
            "teachers": [
                {"name": "G", "model": "openai/gpt-4o", "strict_tools": True},
                {"name": "C", "model": "anthropic/claude-3-opus", "strict_tools": True},
            ]
        }
    }
    models = load_settings(profile="cloud", overrides=overrides).models
    assert rules_for(models, "G") == OPENAI_STRICT
    assert rules_for(models, "C") == TOOL_RULES["anthropic"]
